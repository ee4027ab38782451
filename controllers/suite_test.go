package controllers

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"go.uber.org/zap/zapcore"
	clocktesting "k8s.io/utils/clock/testing"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
)

// The envtest harness: a real kube-apiserver and etcd (built from source by
// hack/controlplane.sh), the real garbage collector and namespace controller
// from a kube-controller-manager, and the operator's manager in-process.
var (
	testScheme  = runtime.NewScheme()
	testCfg     *rest.Config
	k8s         client.Client // uncached client for assertions
	writes      *writeCounter
	reconciles  atomic.Int64
	envtestSkip string
	// testObserver polls the media pods of every test; testClock drives the
	// autoscaler's stabilization window.
	testObserver *Observer
	testClock    = clocktesting.NewFakeClock(time.Now())
	// testReconciler is the suite's reconciler, for tests of its state.
	testReconciler *MediaServiceReconciler
)

const testImage = "mediafleet/mediaserver:test"

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(testScheme))
	utilruntime.Must(mediav1alpha1.AddToScheme(testScheme))
	utilruntime.Must(monitoringv1.AddToScheme(testScheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(testScheme))
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		if out, err := exec.Command("../hack/controlplane.sh", "--dir").Output(); err == nil && fileExists(filepath.Join(strings.TrimSpace(string(out)), "kube-apiserver")) {
			p := strings.TrimSpace(string(out))
			assets = p
			os.Setenv("KUBEBUILDER_ASSETS", p)
		}
	}
	if assets == "" || testing.Short() {
		if os.Getenv("CI") != "" && !testing.Short() {
			fmt.Println("KUBEBUILDER_ASSETS is unset in CI: run the tests through `make test`")
			return 1
		}
		envtestSkip = "no API server: KUBEBUILDER_ASSETS unset (make test builds one) or -short"
		return m.Run()
	}
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(false), zap.Level(zapLevel())))

	testEnv := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := testEnv.Start()
	if err != nil {
		fmt.Println("start envtest:", err)
		return 1
	}
	defer func() { _ = testEnv.Stop() }()
	testCfg = cfg

	stopKCM, err := startControllerManager(testEnv, assets)
	if err != nil {
		fmt.Println("start kube-controller-manager:", err)
		return 1
	}
	defer stopKCM()

	k8s, err = client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		fmt.Println("client:", err)
		return 1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testScheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  CacheOptions(MonitoringCRDsServed(cfg)),
		Controller:             config.Controller{SkipNameValidation: ptrTo(true)},
	})
	if err != nil {
		fmt.Println("manager:", err)
		return 1
	}
	writes = &writeCounter{Client: mgr.GetClient()}
	testObserver = NewObserver(mgr.GetClient(), ObserverOptions{Interval: 300 * time.Millisecond, Timeout: time.Second})
	r := &MediaServiceReconciler{
		Client:   writes,
		Recorder: mgr.GetEventRecorder("mediafleet"),
		Options:  Options{MediaserverImage: testImage, DeletionCostInterval: 200 * time.Millisecond, MonitoringRecheck: time.Second},
		Observer: testObserver,
		Clock:    testClock,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		fmt.Println("setup:", err)
		return 1
	}
	testReconciler = r
	go func() {
		if err := mgr.Start(ctx); err != nil {
			fmt.Println("manager stopped:", err)
		}
	}()
	return m.Run()
}

func zapLevel() zapcore.Level {
	if os.Getenv("TEST_VERBOSE_OPERATOR") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}

// startControllerManager runs kube-controller-manager with only the garbage
// collector and namespace controllers: real owner-reference deletion, no
// Deployment controller (tests set Deployment status themselves).
func startControllerManager(env *envtest.Environment, assets string) (func(), error) {
	bin := filepath.Join(assets, "kube-controller-manager")
	if !fileExists(bin) {
		return nil, fmt.Errorf("%s missing: run hack/controlplane.sh", bin)
	}
	user, err := env.AddUser(envtest.User{Name: "kcm", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kcm")
	if err != nil {
		return nil, err
	}
	kcPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "kcm.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin,
		"--kubeconfig="+kcPath,
		"--controllers=garbagecollector,namespace",
		"--leader-elect=false",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
		"-v=1")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		_ = logFile.Close()
		_ = os.RemoveAll(dir)
	}, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func ptrTo[T any](v T) *T { return &v }

func requireEnvtest(t *testing.T) {
	t.Helper()
	if envtestSkip != "" {
		t.Skip(envtestSkip)
	}
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	return ns.Name
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	var last error
	if err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		last = cond()
		return last == nil, nil
	}); err != nil {
		t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, last)
	}
}

// reconcileFully makes one whole reconcile of ns/name happen: it asks for
// one, waits for it to start, asks again and waits for that one to start.
// One key never reconciles twice at once, so the first has then finished,
// writes and all.
func reconcileFully(t *testing.T, ns, name string) {
	t.Helper()
	key := types.NamespacedName{Namespace: ns, Name: name}
	for range 2 {
		before := reconcilesOf(key)
		kick(ns, name)
		eventually(t, waitFor, "a reconcile of "+key.String(), func() error {
			if reconcilesOf(key) <= before {
				return fmt.Errorf("no reconcile of %s started", key)
			}
			return nil
		})
	}
}

// settle waits until a whole reconcile of ns/name (and, with passes > 0,
// that many observation passes) writes nothing in the namespace: what a
// steady-window test measures from.
func settle(t *testing.T, ns, name string, passes int64) {
	t.Helper()
	eventually(t, 30*time.Second, "no writes in "+ns, func() error {
		w, p := writes.writesIn(ns), testObserver.Passes()
		if passes > 0 {
			eventually(t, waitFor, "observation passes", func() error {
				if testObserver.Passes() < p+passes {
					return fmt.Errorf("%d passes", testObserver.Passes()-p)
				}
				return nil
			})
		}
		reconcileFully(t, ns, name)
		if n := writes.writesIn(ns) - w; n != 0 {
			return fmt.Errorf("%d writes", n)
		}
		return nil
	})
}

// writeCounter counts every write the reconciler sends to the API server,
// per namespace, so that tests running beside each other do not mix counts.
// started counts reconciles per MediaService.
var (
	startedMu sync.Mutex
	started   = map[types.NamespacedName]int{}
)

func reconcilesOf(key types.NamespacedName) int {
	startedMu.Lock()
	defer startedMu.Unlock()
	return started[key]
}

type writeCounter struct {
	client.Client
	mu   sync.Mutex
	byNS map[string]int
}

func (w *writeCounter) add(ns string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byNS == nil {
		w.byNS = map[string]int{}
	}
	w.byNS[ns]++
}

// writesIn is the number of writes to objects in namespace ns so far.
func (w *writeCounter) writesIn(ns string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.byNS[ns]
}

func (w *writeCounter) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	w.add(obj.GetNamespace())
	return w.Client.Create(ctx, obj, opts...)
}
func (w *writeCounter) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	w.add(obj.GetNamespace())
	return w.Client.Update(ctx, obj, opts...)
}
func (w *writeCounter) Patch(ctx context.Context, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
	w.add(obj.GetNamespace())
	return w.Client.Patch(ctx, obj, p, opts...)
}
func (w *writeCounter) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	w.add(obj.GetNamespace())
	return w.Client.Delete(ctx, obj, opts...)
}
func (w *writeCounter) Apply(ctx context.Context, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
	ns := ""
	if n, ok := obj.(interface{ GetNamespace() *string }); ok && n.GetNamespace() != nil {
		ns = *n.GetNamespace()
	}
	w.add(ns)
	return w.Client.Apply(ctx, obj, opts...)
}
func (w *writeCounter) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if _, ok := obj.(*mediav1alpha1.MediaService); ok {
		reconciles.Add(1) // every reconcile starts with this Get
		startedMu.Lock()
		started[key]++
		startedMu.Unlock()
	}
	return w.Client.Get(ctx, key, obj, opts...)
}
func (w *writeCounter) Status() client.SubResourceWriter {
	return &statusCounter{SubResourceWriter: w.Client.Status(), w: w}
}

type statusCounter struct {
	client.SubResourceWriter
	w *writeCounter
}

func (s *statusCounter) Update(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	s.w.add(obj.GetNamespace())
	return s.SubResourceWriter.Update(ctx, obj, opts...)
}
func (s *statusCounter) Patch(ctx context.Context, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	s.w.add(obj.GetNamespace())
	return s.SubResourceWriter.Patch(ctx, obj, p, opts...)
}

type resourceQuantity = resource.Quantity

func parseQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// runClock moves the reconciler's fake clock with real time for the rest
// of the test (deletion-cost spacing, the monitoring recheck); tests that
// step it themselves (the autoscaler's window) do not call it.
func runClock(t *testing.T) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				testClock.Step(50 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}
