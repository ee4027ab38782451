package web_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/server"
	"github.com/mediafleet/mediafleet/mediaserver/server/servertest"
	"github.com/mediafleet/mediafleet/mediaserver/testpki"
)

// The page is opened under a name that is not localhost (media.test,
// mapped to 127.0.0.1 inside Chromium only), as a user of a real fleet
// would: plain http there is not a secure context, HTTPS is.
const pageHost = "media.test"

// trustingHome is a HOME whose NSS database (what Chromium on Linux
// trusts) holds ca as a trusted authority for servers.
func trustingHome(t *testing.T, ca *testpki.CA) string {
	t.Helper()
	certutil, err := exec.LookPath("certutil")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("certutil is not installed: hack/install-browser.sh installs libnss3-tools")
		}
		t.Skip("certutil not installed (apt-get install libnss3-tools)")
	}
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(home, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-d", "sql:" + db, "-N", "--empty-password"},
		{"-d", "sql:" + db, "-A", "-t", "C,,", "-n", "mediafleet-test-ca", "-i", caFile},
	} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v\n%s", args, err, out)
		}
	}
	return home
}

// browserAt starts Chromium resolving pageHost to loopback, with HOME set
// (its NSS database decides which CAs are trusted).
func browserAt(t *testing.T, home string) context.Context {
	t.Helper()
	return browserWith(t,
		chromedp.Flag("host-resolver-rules", "MAP "+pageHost+" 127.0.0.1"),
		chromedp.Env("HOME="+home))
}

func pageURL(t *testing.T, s *server.Server, scheme string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(s.PublicURL(), "https://"), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	return scheme + "://" + pageHost + ":" + port
}

// TestBrowserPublishesOverHTTPSWithTrustedCA: the page served over HTTPS
// by a mediaserver whose certificate a (trusted) CA issued is a secure
// context: Chromium publishes its camera over WHIP and a second tab
// decodes it, and a WebSocket room works over WSS.
func TestBrowserPublishesOverHTTPSWithTrustedCA(t *testing.T) {
	chromiumPath(t)
	ca := testpki.NewCA(t)
	cert, key := ca.Issue(t, pageHost)
	certFile, keyFile := testpki.WritePair(t, t.TempDir(), cert, key)
	s := servertest.Start(t, func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile = certFile, keyFile })
	b := browserAt(t, trustingHome(t, ca))
	base := pageURL(t, s, "https")

	pub := tab(t, b, base+"/?room=secure&mode=publish")
	if !eval[bool](t, pub, `window.isSecureContext`) {
		t.Fatal("the HTTPS page is not a secure context")
	}
	waitJS(t, pub, 30*time.Second, "publisher connected over HTTPS", `mediafleet.status === 'connected'`)
	view := tab(t, b, base+"/?room=secure&mode=watch")
	waitJS(t, view, 30*time.Second, "watcher decodes", framesDecodedJS+` > 10`)
	if st := s.Report(); st.Sessions.Active != 2 {
		t.Errorf("/status counts %d sessions, want 2", st.Sessions.Active)
	}
	room := tab(t, b, base+"/?room=secure-ws&mode=join")
	waitJS(t, room, 30*time.Second, "WSS join connected", `mediafleet.status === 'connected'`)
	screenshot(t, pub, "browser-https-publish.png")
}

// TestBrowserInsecureContextSaysSo: the same page over plain http to a
// name that is not localhost gets no camera from the browser; the page
// says exactly why and what to do instead of blaming a refusal.
func TestBrowserInsecureContextSaysSo(t *testing.T) {
	chromiumPath(t)
	s := servertest.Start(t, nil)
	b := browserAt(t, t.TempDir())
	page := tab(t, b, pageURL(t, s, "http")+"/?room=plain&mode=publish")
	waitJS(t, page, 15*time.Second, "publish fails", `mediafleet.status === 'error'`)
	msg := eval[string](t, page, `document.getElementById('message').textContent`)
	for _, want := range []string{"not a secure context", "HTTPS", "localhost"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "refused") {
		t.Errorf("message blames a refusal that never happened: %q", msg)
	}
	if st := s.Report(); st.Sessions.Active != 0 {
		t.Errorf("%d sessions after a failed publish", st.Sessions.Active)
	}
	// Watching needs no camera and works on plain http.
	pub := tab(t, b, s.PublicURL()+"/?room=plain&mode=publish") // 127.0.0.1 is a secure context
	waitJS(t, pub, 30*time.Second, "loopback publisher connected", `mediafleet.status === 'connected'`)
	view := tab(t, b, pageURL(t, s, "http")+"/?room=plain&mode=watch")
	waitJS(t, view, 30*time.Second, "plain-http watcher decodes", framesDecodedJS+` > 10`)
	screenshot(t, page, "browser-insecure-context.png")
}
