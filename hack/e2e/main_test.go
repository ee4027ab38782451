//go:build e2e

// Package e2e is the end-to-end suite: it runs against the single-node
// cluster of `make dev` (hack/cluster.sh) with the operator deployed
// in-cluster, and drives real pods with real WebRTC clients over the
// cluster's own addresses (198.18.0.0/15, on interfaces the cluster script
// created). Run it with `make test-e2e`.
//
// Environment: KUBECONFIG (default bin/dev/kubeconfig), KUBECTL (default
// the kubectl hack/controlplane.sh built), E2E_INTERFACES (where the
// clients gather ICE candidates, default mfdev0,mfbr0).
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	mfclient "github.com/mediafleet/mediafleet/mediaserver/client"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

const (
	operatorNamespace  = "mediafleet-system"
	operatorDeployment = "mediafleet-controller-manager"
	nodeIP             = "198.18.0.1"
	instanceLabel      = "app.kubernetes.io/instance"
)

var (
	kc         client.Client
	cs         *kubernetes.Clientset
	kubectlBin string
	kubeconfig string
	ns         string
	rtcAPI     *webrtc.API
	httpc      = &http.Client{Timeout: 10 * time.Second}

	turnCAFile string

	phasesMu sync.Mutex
	phases   []string
)

func TestMain(m *testing.M) {
	root, _ := filepath.Abs("../..")
	kubeconfig = envOr("KUBECONFIG", filepath.Join(root, "bin/dev/kubeconfig"))
	kubectlBin = os.Getenv("KUBECTL")
	if kubectlBin == "" {
		dir, err := exec.Command(filepath.Join(root, "hack/controlplane.sh"), "--dir").Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: hack/controlplane.sh --dir: %v\n", err)
			os.Exit(1)
		}
		kubectlBin = filepath.Join(strings.TrimSpace(string(dir)), "kubectl")
	}
	// pion's ICE agent checks turns: servers against the system roots
	// only: they are read from SSL_CERT_FILE when first needed, which the
	// TURN test fills with its CA before it dials (nothing else in the
	// suite uses the system roots).
	caDir, err := os.MkdirTemp("", "e2e-turn-ca")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(1)
	}
	turnCAFile = filepath.Join(caDir, "ca.pem")
	_ = os.Setenv("SSL_CERT_FILE", turnCAFile)
	if err := setup(strings.Split(envOr("E2E_INTERFACES", "mfdev0,mfbr0"), ",")); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n(start the cluster with `make dev`, or run `make test-e2e`)\n", err)
		os.Exit(1)
	}
	code := m.Run()
	// Everything the suite created goes with its namespace.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	if err := kc.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: delete namespace %s: %v\n", ns, err)
	}
	cancel()
	_ = os.RemoveAll(caDir)
	fmt.Println("\nphase durations:")
	for _, p := range phases {
		fmt.Println("  " + p)
	}
	os.Exit(code)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func setup(ifaces []string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	scheme := k8sruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := mediav1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	if kc, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return err
	}
	if cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if _, err := os.Stat(kubectlBin); err != nil {
		return fmt.Errorf("kubectl: %w", err)
	}
	ns = fmt.Sprintf("e2e-%d", rand.IntN(1e6))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return fmt.Errorf("create namespace (is the cluster up?): %w", err)
	}
	rtcAPI, err = mfclient.NewAPI(ifaces...)
	return err
}

// phase records how long a test took, printed at the end of the run.
func phase(t *testing.T) {
	start := time.Now()
	t.Cleanup(func() {
		phasesMu.Lock()
		defer phasesMu.Unlock()
		status := "ok"
		if t.Failed() {
			status = "FAILED"
		}
		phases = append(phases, fmt.Sprintf("%-40s %6.1fs %s", t.Name(), time.Since(start).Seconds(), status))
	})
}

// checkLeaks fails the test when it leaves goroutines behind (the sessions
// it opened must all be closed). Connections kept alive by HTTP clients
// are not leaks.
func checkLeaks(t *testing.T) {
	opts := []goleak.Option{goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("golang.org/x/net/http2.(*ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*http2ClientConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*http2clientConnReadLoop).run"),
	}
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		httpc.CloseIdleConnections()
		goleak.VerifyNone(t, opts...)
	})
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// kubectl runs the cluster's kubectl and returns its standard output.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// msvcRow is `kubectl get msvc NAME` as columns by header.
func msvcRow(t *testing.T, name string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(kubectl(t, "-n", ns, "get", "msvc", name)), "\n")
	if len(lines) != 2 {
		t.Fatalf("kubectl get msvc %s: %q", name, lines)
	}
	// kubectl aligns every cell under its header: cut the row at the
	// headers' offsets, so that an empty cell (SESSIONS before the first
	// observation, TURN without a gateway) stays empty instead of
	// shifting the others.
	head, val := lines[0], lines[1]
	var starts []int
	for i := 0; i < len(head); i++ {
		if head[i] != ' ' && (i == 0 || head[i-1] == ' ') {
			starts = append(starts, i)
		}
	}
	row := map[string]string{}
	for i, st := range starts {
		end := len(head)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		name := strings.TrimSpace(head[st:end])
		cell := ""
		if st < len(val) {
			cell = strings.TrimSpace(val[st:min(end, len(val))])
		}
		row[name] = cell
	}
	return row
}

// waitRow waits until `kubectl get msvc NAME` shows the wanted columns
// (within the observation interval for SESSIONS and LEAK).
func waitRow(t *testing.T, name string, want map[string]string) {
	t.Helper()
	eventually(t, 45*time.Second, fmt.Sprintf("kubectl get msvc %s shows %v", name, want), func() (bool, string) {
		row := msvcRow(t, name)
		for k, v := range want {
			if row[k] != v {
				return false, fmt.Sprint(row)
			}
		}
		return true, ""
	})
}

// eventually polls cond until it holds, failing with its last message.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	var msg string
	if err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		var ok bool
		ok, msg = cond()
		return ok, nil
	}); err != nil {
		t.Fatalf("%s: not reached after %s; last: %s", what, timeout, msg)
	}
}

func createMS(t *testing.T, name string, spec mediav1alpha1.MediaServiceSpec) *mediav1alpha1.MediaService {
	t.Helper()
	return createMSIn(t, ns, name, spec)
}

func createMSIn(t *testing.T, namespace, name string, spec mediav1alpha1.MediaServiceSpec) *mediav1alpha1.MediaService {
	t.Helper()
	ms := &mediav1alpha1.MediaService{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Spec: spec}
	if err := kc.Create(ctxFor(t, 30*time.Second), ms); err != nil {
		t.Fatalf("create MediaService %s: %v", name, err)
	}
	return ms
}

func getMS(t *testing.T, name string) *mediav1alpha1.MediaService {
	t.Helper()
	return getMSIn(t, ns, name)
}

func getMSIn(t *testing.T, namespace, name string) *mediav1alpha1.MediaService {
	t.Helper()
	ms := &mediav1alpha1.MediaService{}
	if err := kc.Get(ctxFor(t, 10*time.Second), client.ObjectKey{Namespace: namespace, Name: name}, ms); err != nil {
		t.Fatalf("get MediaService %s: %v", name, err)
	}
	return ms
}

func condition(ms *mediav1alpha1.MediaService, typ string) *metav1.Condition {
	for i := range ms.Status.Conditions {
		if ms.Status.Conditions[i].Type == typ {
			return &ms.Status.Conditions[i]
		}
	}
	return nil
}

// waitAvailable waits until the MediaService is Available with n ready
// pods and exactly n pods exist (none terminating).
func waitAvailable(t *testing.T, name string, n int32, timeout time.Duration) {
	t.Helper()
	waitAvailableIn(t, ns, name, n, timeout)
}

func waitAvailableIn(t *testing.T, namespace, name string, n int32, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("MediaService %s/%s available with %d pods", namespace, name, n), func() (bool, string) {
		ms := getMSIn(t, namespace, name)
		c := condition(ms, mediav1alpha1.ConditionAvailable)
		pods := mediaPodsIn(t, namespace, name)
		ready := 0
		for _, p := range pods {
			if podReady(&p) && p.DeletionTimestamp == nil {
				ready++
			}
		}
		ok := c != nil && c.Status == metav1.ConditionTrue && ms.Status.ReadyReplicas == n && len(pods) == int(n) && ready == int(n) &&
			ms.Status.ObservedGeneration == ms.Generation
		return ok, fmt.Sprintf("available=%v readyReplicas=%d pods=%d ready=%d", c, ms.Status.ReadyReplicas, len(pods), ready)
	})
}

// mediaPods lists the media pods of a MediaService (not its TURN
// gateway's), sorted by name.
func mediaPods(t *testing.T, name string) []corev1.Pod {
	t.Helper()
	return mediaPodsIn(t, ns, name)
}

func mediaPodsIn(t *testing.T, namespace, name string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	if err := kc.List(ctxFor(t, 10*time.Second), &list, client.InNamespace(namespace), client.MatchingLabels{instanceLabel: name, "app.kubernetes.io/name": "mediaserver"}); err != nil {
		t.Fatalf("list pods: %v", err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	return list.Items
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// adminToken reads the admin token the operator made for a pod's
// MediaService (its Secret NAME-admin-token), as the operator does.
func adminToken(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	ms := pod.Labels["media.mediafleet.io/service"]
	sec, err := cs.CoreV1().Secrets(pod.Namespace).Get(ctxFor(t, 10*time.Second), ms+"-admin-token", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("admin token of %s: %v", ms, err)
	}
	return string(sec.Data["token"])
}

// adminDo sends a request to a pod's admin port (9090 unless the spec
// moved it) with the given bearer token ("" for none).
func adminDo(pod *corev1.Pod, adminPort int, method, path, token string) (int, []byte, error) {
	req, err := http.NewRequest(method, fmt.Sprintf("http://%s%s", net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(adminPort)), path), nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// seriesValue reads one series ("name" or "name{labels}", as exposed) of
// a pod's /metrics on port (served without a token); found is false when
// the pod does not expose it (yet).
func seriesValue(pod *corev1.Pod, port int, series string) (v float64, found bool, err error) {
	code, body, err := adminDo(pod, port, http.MethodGet, "/metrics", "")
	if err != nil || code != http.StatusOK {
		return 0, false, fmt.Errorf("GET /metrics of %s: %d %v", pod.Name, code, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if s, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return 0, false, fmt.Errorf("%s of %s: %q", series, pod.Name, line)
			}
			return v, true, nil
		}
	}
	return 0, false, nil
}

// adminGet reads a pod's admin endpoint with its MediaService's token.
func adminGet(t *testing.T, pod *corev1.Pod, adminPort int, path string) (int, []byte, error) {
	t.Helper()
	return adminDo(pod, adminPort, http.MethodGet, path, adminToken(t, pod))
}

func podReport(t *testing.T, pod *corev1.Pod, adminPort int) statusapi.Report {
	t.Helper()
	c := statusapi.Client{HTTP: httpc, Token: adminToken(t, pod)}
	r, err := c.Report(ctxFor(t, 10*time.Second), net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(adminPort)))
	if err != nil {
		t.Fatalf("GET /status of %s: %v", pod.Name, err)
	}
	return r
}

// clientOpts are the suite's WebRTC clients: like the demo page and the
// load generator, they retry a 503 with Retry-After a few times.
func clientOpts() mfclient.Options {
	return mfclient.Options{API: rtcAPI, HTTP: httpc, Retries: 3}
}

// freeHostTCPPort is a TCP port free on ip now (hostNetwork pods bind the
// node's address; nothing here is fixed, so runs and benchmarks on the
// same machine never collide).
func freeHostTCPPort(t *testing.T, ip string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// freeHostUDPRange finds n consecutive UDP ports free on ip, above 30000
// and outside the kernel's ephemeral range start.
func freeHostUDPRange(t *testing.T, ip string, n int) (int, int) {
	t.Helper()
	for try := 0; try < 50; try++ {
		lo := 30000 + rand.IntN(2000)*n%27000
		var held []net.PacketConn
		ok := true
		for p := lo; p < lo+n; p++ {
			c, err := net.ListenPacket("udp4", net.JoinHostPort(ip, strconv.Itoa(p)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, c)
		}
		for _, c := range held {
			c.Close()
		}
		if ok {
			return lo, lo + n - 1
		}
	}
	t.Fatalf("no %d free consecutive UDP ports on %s", n, ip)
	return 0, 0
}

// waitServiceAnswers waits until a Service answers a plain GET of the demo
// page, as a client would: the only gap left once a MediaService is
// Available is kube-proxy programming the Service's rules, during which a
// connection is refused. It returns how many were refused and for how long.
func waitServiceAnswers(t *testing.T, c *http.Client, base string) (refused int, took time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		resp, err := c.Get(base + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s/: %s", base, resp.Status)
			}
			return refused, time.Since(start)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 30*time.Second {
			t.Fatalf("GET %s/ (after %d refused connections): %v", base, refused, err)
		}
		refused++
		time.Sleep(50 * time.Millisecond)
	}
}

// serviceURL is the signalling Service's ClusterIP URL, reached from the
// host through kube-proxy's rules.
func serviceURL(t *testing.T, name string) string {
	t.Helper()
	return serviceURLIn(t, ns, name)
}

func serviceURLIn(t *testing.T, namespace, name string) string {
	t.Helper()
	svc, err := cs.CoreV1().Services(namespace).Get(ctxFor(t, 10*time.Second), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Service %s: %v", name, err)
	}
	return fmt.Sprintf("http://%s:%d", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
}

// waitPackets waits until a counter has counted more than n packets.
func waitPackets(t *testing.T, what string, c *mfclient.Counter, n uint64, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, what+" receives RTP", func() (bool, string) {
		got := c.Packets.Load()
		return got > n, fmt.Sprintf("%d packets on %d tracks", got, c.Tracks.Load())
	})
}

// mediaServiceEvents lists the Events recorded for a MediaService.
func mediaServiceEvents(t *testing.T, name string) []corev1.Event {
	t.Helper()
	list, err := cs.CoreV1().Events(ns).List(ctxFor(t, 10*time.Second), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=MediaService,involvedObject.name=" + name})
	if err != nil {
		t.Fatalf("list events: %v", err)
	}
	// events.k8s.io/v1 Events are served through the core API too.
	return list.Items
}

// every runs fn every 200 ms in the background until the returned stop is
// called (or the test ends); stop waits for the last run.
func every(t *testing.T, fn func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			fn()
		}
	}()
	stop = sync.OnceFunc(func() { close(done); wg.Wait() })
	t.Cleanup(stop)
	return stop
}

// minAvailable samples a Deployment's available replicas every 200 ms;
// the function it returns stops sampling and gives the lowest seen.
func minAvailable(t *testing.T, name string) func() int32 {
	var low atomic.Int32
	low.Store(math.MaxInt32)
	stop := every(t, func() {
		var d appsv1.Deployment
		if kc.Get(ctxFor(t, 5*time.Second), client.ObjectKey{Namespace: ns, Name: name}, &d) == nil && d.Status.AvailableReplicas < low.Load() {
			low.Store(d.Status.AvailableReplicas)
		}
	})
	return func() int32 {
		stop()
		return low.Load()
	}
}
