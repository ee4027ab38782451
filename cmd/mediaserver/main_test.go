package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/client"
)

// binary builds the mediaserver once per test run.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mediaserver-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "mediaserver")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type proc struct {
	cmd         *exec.Cmd
	base, admin string
	mu          sync.Mutex
	logs        []map[string]any
	exited      chan struct{}
	exitCode    int
}

func start(t *testing.T, env ...string) *proc {
	t.Helper()
	port, adminPort := freePort(t), freePort(t)
	cmd := exec.Command(binary(t), "-listen-host=127.0.0.1", "-ice-loopback", "-ice-interfaces=lo")
	cmd.Env = append(os.Environ(), append([]string{"PORT=" + strconv.Itoa(port), "ADMIN_PORT=" + strconv.Itoa(adminPort), "LOG_FORMAT=json", "LOG_LEVEL=info"}, env...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", port), admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), exited: make(chan struct{})}
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				p.mu.Lock()
				p.logs = append(p.logs, m)
				p.mu.Unlock()
			}
		}
	}()
	go func() {
		<-logsDone
		err := cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.exitCode = ee.ExitCode()
		}
		close(p.exited)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.exited })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(p.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("mediaserver never became ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *proc) messages() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.logs {
		if s, ok := m["msg"].(string); ok {
			out = append(out, s)
		}
	}
	return out
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
	part, err := client.Join(ctx, "ws"+p.base[4:]+"/ws", "drain", true, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer part.Close()
	pub, err := client.Publish(ctx, p.base, "drain-whip", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := client.WaitConnected(ctx, part.PC); err != nil {
		t.Fatal(err)
	}

	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Readiness false and new sessions refused, at once.
	deadline := time.Now().Add(2 * time.Second)
	for {
		resp, err := http.Get(p.admin + "/readyz")
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
	if code := status(p.base + "/whip/late"); code != 503 {
		t.Errorf("new session during drain = %d, want 503", code)
	}
	if resp, err := http.Get(p.admin + "/healthz"); err != nil || resp.StatusCode != 200 {
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
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("process did not exit after the drain")
	}
	took := time.Since(sent)
	if p.exitCode != 0 {
		t.Errorf("exit code %d, want 0", p.exitCode)
	}
	if took < 3500*time.Millisecond {
		t.Errorf("exited %s after SIGTERM: the session was cut before DRAIN_TIMEOUT (4s)", took)
	}
	want := []string{"signal received; draining (send again to exit now)", "draining", "drain timeout: closing remaining sessions", "drained", "exited cleanly"}
	got := p.messages()
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
	pub, err := client.Publish(ctx, p.base, "stay", client.Options{API: api})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("second signal did not end the process")
	}
	if p.exitCode != 1 || time.Since(start) > 8*time.Second {
		t.Errorf("exit code %d after %s, want 1 quickly", p.exitCode, time.Since(start))
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
