package statusapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// MaxReportBytes bounds a /status answer a client reads.
const MaxReportBytes = 1 << 20

// ErrHoldsNewer is PutMembership's error when the pod keeps a newer list
// (409): the list was not delivered.
var ErrHoldsNewer = errors.New("the pod holds a newer member list")

// StatusError is a non-2xx answer of the admin port.
type StatusError struct {
	Method, URL string
	Code        int
	Body        string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s: HTTP %d", e.Method, e.URL, e.Code)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Client speaks this contract to a pod's admin port: the operator's
// observer, the load generator and the tests all use it.
type Client struct {
	// HTTP carries the requests (http.DefaultClient when nil).
	HTTP *http.Client
	// Token is the pods' ADMIN_TOKEN ("" for a loopback-only mediaserver).
	Token string
}

// admin turns a host:port or a base URL into the admin base URL.
func admin(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimSuffix(addr, "/")
	}
	return "http://" + addr
}

func (c *Client) do(ctx context.Context, method, url string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	return hc.Do(req)
}

func statusError(method, url string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return &StatusError{Method: method, URL: url, Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
}

// Report reads a pod's /status; addr is its admin host:port or base URL.
// A report of an APIVersion this package does not know is an error.
func (c *Client) Report(ctx context.Context, addr string) (Report, error) {
	var r Report
	err := c.status(ctx, addr, &r, func() string { return r.APIVersion })
	return r, err
}

// GatewayReport reads a TURN gateway pod's /status.
func (c *Client) GatewayReport(ctx context.Context, addr string) (GatewayReport, error) {
	var r GatewayReport
	err := c.status(ctx, addr, &r, func() string { return r.APIVersion })
	return r, err
}

func (c *Client) status(ctx context.Context, addr string, into any, version func() string) error {
	url := admin(addr) + Path
	resp, err := c.do(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(http.MethodGet, url, resp)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxReportBytes)).Decode(into); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if v := version(); v != APIVersion {
		return fmt.Errorf("GET %s: unknown apiVersion %q", url, v)
	}
	return nil
}

// PutMembership delivers a member list to a pod (ErrHoldsNewer when it
// keeps a newer one).
func (c *Client) PutMembership(ctx context.Context, addr string, list Membership) error {
	body, err := json.Marshal(list)
	if err != nil {
		return err
	}
	url := admin(addr) + MembershipPath
	resp, err := c.do(ctx, http.MethodPut, url, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK:
		return nil
	case http.StatusConflict:
		return ErrHoldsNewer
	default:
		return statusError(http.MethodPut, url, resp)
	}
}
