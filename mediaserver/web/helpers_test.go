package web_test

import (
	"io"
	"net/http"
	"strings"
)

func bytesReader(s string) io.Reader { return strings.NewReader(s) }

func readAll(resp *http.Response) string {
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
