package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/hack/mediaproc"
	"github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
	"k8s.io/apimachinery/pkg/util/wait"
)

// binary is the mediaserver built with -race, once per test run.
func binary(t *testing.T) string {
	t.Helper()
	return mediaproc.Binary(t, mediaproc.Build{Race: true})
}

// start runs one mediaserver process (free loopback ports, JSON logs kept)
// and waits until it is ready.
func start(t *testing.T, env ...string) *mediaproc.Proc {
	t.Helper()
	return mediaproc.Start(t, binary(t), mediaproc.Options{Env: env})
}

func status(url string) int {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Post(url, "application/sdp", strings.NewReader("v=0"))
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestSIGTERMDrainsThenExits: a real process with a WebSocket participant
// and a WHIP publisher gets SIGTERM: readiness drops at once, new sessions
// get 503, the participant is told it is draining, the process waits for the
// sessions (the publisher leaves on its own), closes what is left at
// DRAIN_TIMEOUT, and exits 0.
func TestSIGTERMDrainsThenExits(t *testing.T) {
	p := start(t, "DRAIN_TIMEOUT=4s")
	api, err := client.NewAPI()
	if err != nil {
		t.Fatal(err)
	}
	opts := client.Options{API: api, HTTP: &http.Client{Timeout: 10 * time.Second}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	part, err := client.Join(ctx, "ws"+p.URL[4:]+"/ws", "drain", true, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer part.Close()
	pub, err := client.Publish(ctx, p.URL, "drain-whip", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := client.WaitConnected(ctx, part.PC); err != nil {
		t.Fatal(err)
	}

	sent := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness false and new sessions refused, at once.
	deadline := time.Now().Add(2 * time.Second)
	for {
		resp, err := http.Get(p.AdminURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 503 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("readiness still true 2s after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := status(p.URL + "/whip/late"); code != 503 {
		t.Errorf("new session during drain = %d, want 503", code)
	}
	if resp, err := http.Get(p.AdminURL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("liveness must hold during drain: %v %v", resp, err)
	}
	ev := <-part.Events
	if ev.Type != "draining" || ev.RetryAfter <= 0 {
		t.Fatalf("first message after SIGTERM = %+v, want draining with retryAfter", ev)
	}
	// The WHIP publisher ends its session itself; the participant stays.
	if code, err := pub.Delete(ctx); err != nil || code != 200 {
		t.Fatalf("DELETE during drain: %d %v", code, err)
	}
	ev = <-part.Events
	if ev.Type != "closed" || ev.Reason != "drain-timeout" {
		t.Fatalf("then %+v, want closed (drain-timeout)", ev)
	}
	select {
	case <-p.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("process did not exit after the drain")
	}
	took := time.Since(sent)
	if p.ExitCode() != 0 {
		t.Errorf("exit code %d, want 0", p.ExitCode())
	}
	if took < 3500*time.Millisecond {
		t.Errorf("exited %s after SIGTERM: the session was cut before DRAIN_TIMEOUT (4s)", took)
	}
	want := []string{"signal received; draining (send again to exit now)", "draining", "drain timeout: closing remaining sessions", "drained", "exited cleanly"}
	got := p.Messages()
	i := 0
	for _, m := range got {
		if i < len(want) && m == want[i] {
			i++
		}
	}
	if i != len(want) {
		t.Errorf("log order %q, want in order %q", got, want)
	}
}

// TestSecondSignalExitsAtOnce: a second SIGTERM ends the drain early.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	p := start(t, "DRAIN_TIMEOUT=60s")
	api, _ := client.NewAPI()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub, err := client.Publish(ctx, p.URL, "stay", client.Options{API: api})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("second signal did not end the process")
	}
	if p.ExitCode() != 1 || time.Since(start) > 8*time.Second {
		t.Errorf("exit code %d after %s, want 1 quickly", p.ExitCode(), time.Since(start))
	}
}

// TestInvalidConfigurationNamesTheVariable: bad environment stops the
// process at start with the variable's name.
func TestInvalidConfigurationNamesTheVariable(t *testing.T) {
	for env, want := range map[string]string{
		"ICE_PORT_MIN=60000":    "ICE_PORT_MIN=60000 must be <= ICE_PORT_MAX=0",
		"MAX_SESSIONS=many":     `MAX_SESSIONS="many": not an integer`,
		"STUN_SERVERS=http://x": `STUN_SERVERS: "http://x" is not a stun: or stuns: URL`,
	} {
		cmd := exec.Command(binary(t))
		cmd.Env = append(os.Environ(), env)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), want) {
			t.Errorf("%s: exit %v, output %q; want exit 2 naming %q", env, err, out, want)
		}
	}
}

// TestTURNMode: "mediaserver turn" is the TURN gateway: not ready until
// the operator delivered its member list, ready after, and on SIGTERM
// with no allocation left it exits 0 at once. A bad configuration exits 2
// naming the variable, without echoing the secret.
func TestTURNMode(t *testing.T) {
	bad := mediaproc.StartNoWait(t, binary(t), mediaproc.Options{Args: []string{"turn"}, Env: []string{"RELAY_SECRET=too-short", "POD_IP=127.0.0.1"}})
	select {
	case <-bad.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("a gateway with a too short secret started")
	}
	if bad.ExitCode() != 2 {
		t.Errorf("bad configuration: exit %d, want 2", bad.ExitCode())
	}

	const secret = "turn-mode-shared-secret-0123456789"
	p := mediaproc.StartNoWait(t, binary(t), mediaproc.Options{Args: []string{"turn"}, Token: "admin-token", Env: []string{
		"RELAY_SECRET=" + secret, "POD_IP=127.0.0.1", "LISTEN_HOST=127.0.0.1", "ADMIN_LISTEN_HOST=127.0.0.1", "RELAY_UDP_PORT=0", "DRAIN_TIMEOUT=20s",
	}})
	readyz := func() int {
		resp, err := http.Get(p.AdminURL + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	poll(t, 30*time.Second, "the gateway answering, not ready", func() bool { return readyz() == http.StatusServiceUnavailable })
	body := `{"apiVersion":"status.mediafleet.io/v1","generation":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `,"members":[{"name":"m","address":"127.0.0.1:8080","ready":true}]}`
	req, _ := http.NewRequest(http.MethodPut, p.AdminURL+statusapi.MembershipPath, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer admin-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("membership PUT: %d", resp.StatusCode)
	}
	poll(t, 10*time.Second, "ready with members", func() bool { return readyz() == http.StatusOK })
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	case <-time.After(15 * time.Second):
		t.Fatal("no exit after SIGTERM with no allocation")
	}
	if p.ExitCode() != 0 {
		t.Errorf("exit %d after a drain", p.ExitCode())
	}
	for _, m := range append(bad.Logs(), p.Logs()...) {
		if strings.Contains(fmt.Sprint(m), secret) || strings.Contains(fmt.Sprint(m), "too-short") {
			t.Errorf("a log line carries the shared secret: %v", m)
		}
	}
}

func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
