package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/hack/mediaproc"
	"github.com/mediafleet/mediafleet/mediaserver/client"
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
