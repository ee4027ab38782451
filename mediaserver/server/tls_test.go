package server

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/testpki"
)

// tlsServer starts a loopback mediaserver serving HTTPS with a certificate
// of ca written into dir.
func tlsServer(t *testing.T, ca *testpki.CA, dir string, mut func(*config.Config)) *Server {
	t.Helper()
	cert, key := ca.Issue(t, "127.0.0.1", "localhost")
	certFile, keyFile := testpki.WritePair(t, dir, cert, key)
	return testServer(t, func(c *config.Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.TLSReloadInterval = 50 * time.Millisecond
		if mut != nil {
			mut(c)
		}
	})
}

func tlsClientOpts(t *testing.T, ca *testpki.CA) client.Options {
	opts := clientOpts(t)
	opts.TLS = ca.ClientConfig()
	opts.HTTP = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: opts.TLS, DisableKeepAlives: true}}
	return opts
}

// servedSerial is the serial number of the certificate the server presents.
func servedSerial(t *testing.T, s *Server, ca *testpki.CA) (string, error) {
	conn, err := tls.Dial("tcp", strings.TrimPrefix(s.PublicURL(), "https://"), ca.ClientConfig())
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
}

// TestHTTPSSignalling: WHIP, WHEP and WebSocket rooms over HTTPS/WSS with a
// client that trusts only the test CA; plain HTTP on the port gets no
// answer; a renewed certificate written over the files is served without
// a restart, and a broken one is refused while the old one stays.
func TestHTTPSSignalling(t *testing.T) {
	leakCheckFirst(t)
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	s := tlsServer(t, ca, dir, nil)
	if !strings.HasPrefix(s.PublicURL(), "https://") {
		t.Fatalf("public URL %s", s.PublicURL())
	}
	opts := tlsClientOpts(t, ca)
	ctx := ctxT(t, 30*time.Second)

	pub, err := client.Publish(ctx, s.PublicURL(), "tls-room", opts)
	if err != nil {
		t.Fatalf("WHIP over HTTPS: %v", err)
	}
	defer pub.Close()
	if err := client.WaitConnected(ctx, pub.PC); err != nil {
		t.Fatal(err)
	}
	pub.SendRTP(100, 400)
	view, err := client.Play(ctx, s.PublicURL(), "tls-room", opts)
	if err != nil {
		t.Fatalf("WHEP over HTTPS: %v", err)
	}
	defer view.Close()
	waitFor(t, 15*time.Second, "viewer receives RTP", func() error {
		if n := view.Received.Packets.Load(); n < 50 {
			return fmt.Errorf("%d packets", n)
		}
		return nil
	})
	wsURL := "wss://" + strings.TrimPrefix(s.PublicURL(), "https://") + "/ws"
	a, err := client.Join(ctx, wsURL, "tls-ws", true, opts)
	if err != nil {
		t.Fatalf("join over WSS: %v", err)
	}
	defer a.Close()
	b, err := client.Join(ctx, wsURL, "tls-ws", true, opts)
	if err != nil {
		t.Fatalf("join over WSS: %v", err)
	}
	defer b.Close()
	a.SendRTP(50, 300)
	waitFor(t, 15*time.Second, "WSS participant receives the other", func() error {
		if n := b.Received.Packets.Load(); n < 20 {
			return fmt.Errorf("%d packets", n)
		}
		return nil
	})

	// A client that does not trust the CA is refused by its own TLS stack.
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get(s.PublicURL() + "/"); err == nil {
		t.Error("a client without the CA accepted the certificate")
	}
	// Plain HTTP to the TLS port gets no HTTP answer.
	plain := "http://" + strings.TrimPrefix(s.PublicURL(), "https://") + "/"
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(plain); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("plain HTTP on the TLS port answered %d", resp.StatusCode)
		}
	}

	// Renewal: new files, same paths (a Secret update), served without a
	// restart while sessions go on.
	before, err := servedSerial(t, s, ca)
	if err != nil {
		t.Fatal(err)
	}
	cert, key := ca.Issue(t, "127.0.0.1", "localhost")
	testpki.WritePair(t, dir, cert, key)
	waitFor(t, 10*time.Second, "renewed certificate served", func() error {
		got, err := servedSerial(t, s, ca)
		if err != nil {
			return err
		}
		if got == before {
			return fmt.Errorf("still serving serial %s", got)
		}
		return nil
	})
	renewed, _ := servedSerial(t, s, ca)
	// A broken pair (key of another certificate) is not taken.
	_, otherKey := ca.Issue(t, "127.0.0.1")
	testpki.WritePair(t, dir, cert, otherKey)
	waitFor(t, 10*time.Second, "the broken pair seen and refused twice", func() error {
		if n := s.certs.refused.Load(); n < 2 {
			return fmt.Errorf("%d refused reloads", n)
		}
		return nil
	})
	if got, err := servedSerial(t, s, ca); err != nil || got != renewed {
		t.Fatalf("after a broken pair: serial %s err %v, want the renewed %s kept", got, err, renewed)
	}
	if view.PC.ConnectionState().String() != "connected" {
		t.Errorf("viewer state %s after the renewal", view.PC.ConnectionState())
	}
}

// TestHTTPSForwardingBetweenPods: with TLS, a pod forwards WHIP/WHEP and
// WebSocket signalling to the room's owner over HTTPS/WSS, trusting only a
// peer that presents the fleet's own certificate.
func TestHTTPSForwardingBetweenPods(t *testing.T) {
	leakCheckFirst(t)
	ca := testpki.NewCA(t)
	dir := t.TempDir()
	cert, key := ca.Issue(t, "127.0.0.1", "localhost")
	certFile, keyFile := testpki.WritePair(t, dir, cert, key)
	a, b, list := twoPods(t, func(c *config.Config) { c.TLSCertFile, c.TLSKeyFile = certFile, keyFile })
	room := roomOf(list, "pod-b", "tls-")
	opts := tlsClientOpts(t, ca)
	ctx := ctxT(t, 30*time.Second)
	pub, err := client.Publish(ctx, a.PublicURL(), room, opts) // signalled to A, owned by B
	if err != nil {
		t.Fatalf("WHIP through pod-a: %v", err)
	}
	defer pub.Close()
	pub.SendRTP(100, 400)
	view, err := client.Play(ctx, a.PublicURL(), room, opts)
	if err != nil {
		t.Fatalf("WHEP through pod-a: %v", err)
	}
	defer view.Close()
	waitFor(t, 15*time.Second, "viewer receives RTP through the owner", func() error {
		if n := view.Received.Packets.Load(); n < 50 {
			return fmt.Errorf("%d packets", n)
		}
		return nil
	})
	if a.Engine().RoomSessions(room) != 0 || b.Engine().RoomSessions(room) != 2 {
		t.Fatalf("room sessions: pod-a %d pod-b %d, want 0 and 2", a.Engine().RoomSessions(room), b.Engine().RoomSessions(room))
	}
	ws, err := client.Join(ctx, "wss://"+strings.TrimPrefix(a.PublicURL(), "https://")+"/ws", room, false, opts)
	if err != nil {
		t.Fatalf("WSS join through pod-a: %v", err)
	}
	defer ws.Close()
	waitFor(t, 10*time.Second, "WSS session lands on the owner", sessionsAre(b, 3))

	// A peer presenting another certificate (not the fleet's) is refused.
	stranger := testpki.NewCA(t)
	sc, sk := stranger.Issue(t, "127.0.0.1")
	strangerCert, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	cfg := a.certs.peerConfig()
	if err := cfg.VerifyPeerCertificate([][]byte{strangerCert.Certificate[0]}, nil); err == nil {
		t.Error("a peer with a foreign certificate was trusted")
	}
}
