// Package benchmarks measures the operator against a real API server
// (envtest, built from source like the tests): what observing a large fleet
// costs. Run with `make bench-operator`; nothing here is pass/fail.
package benchmarks

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers"
	"github.com/mediafleet/mediafleet/controllers/desired"
	"github.com/mediafleet/mediafleet/hack/mediaproc"
)

// writeCounter counts the reconciler's writes.
type writeCounter struct {
	client.Client
	n atomic.Int64
}

func (w *writeCounter) Create(ctx context.Context, o client.Object, opts ...client.CreateOption) error {
	w.n.Add(1)
	return w.Client.Create(ctx, o, opts...)
}
func (w *writeCounter) Update(ctx context.Context, o client.Object, opts ...client.UpdateOption) error {
	w.n.Add(1)
	return w.Client.Update(ctx, o, opts...)
}
func (w *writeCounter) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.PatchOption) error {
	w.n.Add(1)
	return w.Client.Patch(ctx, o, p, opts...)
}
func (w *writeCounter) Delete(ctx context.Context, o client.Object, opts ...client.DeleteOption) error {
	w.n.Add(1)
	return w.Client.Delete(ctx, o, opts...)
}
func (w *writeCounter) Apply(ctx context.Context, o kruntime.ApplyConfiguration, opts ...client.ApplyOption) error {
	w.n.Add(1)
	return w.Client.Apply(ctx, o, opts...)
}
func (w *writeCounter) Status() client.SubResourceWriter {
	return &statusCounter{SubResourceWriter: w.Client.Status(), n: &w.n}
}

type statusCounter struct {
	client.SubResourceWriter
	n *atomic.Int64
}

func (s *statusCounter) Patch(ctx context.Context, o client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
	s.n.Add(1)
	return s.SubResourceWriter.Patch(ctx, o, p, opts...)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkObserveFleet: 1,000 media pods (10 MediaServices × 100) backed by
// 10 real mediaserver processes (one per MediaService), observed at the default 10s interval for a
// minute. Reports the operator process's CPU share of one core, its heap,
// the cost of one observation pass and the API writes in the steady minute.
func BenchmarkObserveFleet(b *testing.B) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		b.Skip("KUBEBUILDER_ASSETS unset: run through make bench-operator")
	}
	// One mediaserver process per MediaService: the pods of one fleet share
	// its member list, as real pods each holding the same list would.
	const services, podsPer, procs = 10, 100, 10
	window := 60 * time.Second
	if w := os.Getenv("OBSERVE_WINDOW"); w != "" {
		window, _ = time.ParseDuration(w)
	}
	scheme, cfg := startControlPlane(b)
	k8s, _ := client.New(cfg, client.Options{Scheme: scheme})

	// Real mediaservers.
	bin := mediaproc.Binary(b, mediaproc.Build{})
	var admins []int
	for i := 0; i < procs; i++ {
		admins = append(admins, mediaproc.Start(b, bin, mediaproc.Options{Env: []string{"LOG_LEVEL=error"}}).AdminPort)
	}

	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fleet"}}
	_ = k8s.Create(ctx, ns)
	for s := 0; s < services; s++ {
		ms := &mediav1alpha1.MediaService{ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: fmt.Sprintf("ms-%d", s)}}
		if err := k8s.Create(ctx, ms); err != nil {
			b.Fatal(err)
		}
		for p := 0; p < podsPer; p++ {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "fleet", Name: fmt.Sprintf("ms-%d-%03d", s, p), Labels: map[string]string{
					"app.kubernetes.io/name": "mediaserver", "app.kubernetes.io/instance": ms.Name, "app.kubernetes.io/managed-by": "mediafleet",
					"app.kubernetes.io/component": "media", desired.LabelMediaService: ms.Name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "mediaserver", Image: "x",
					Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: int32(admins[s%procs]), Protocol: corev1.ProtocolTCP}}}}},
			}
			if err := k8s.Create(ctx, pod); err != nil {
				b.Fatal(err)
			}
			pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1",
				Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
			if err := k8s.Status().Update(ctx, pod); err != nil {
				b.Fatal(err)
			}
		}
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Controller: oneProcessControllers(), Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: controllers.CacheOptions(controllers.MonitoringCRDsServed(cfg))})
	if err != nil {
		b.Fatal(err)
	}
	writes := &writeCounter{Client: mgr.GetClient()}
	obs := controllers.NewObserver(mgr.GetClient(), controllers.ObserverOptions{}) // defaults: 10s, 32 in flight
	r := &controllers.MediaServiceReconciler{Client: writes, Recorder: mgr.GetEventRecorder("bench"), Observer: obs,
		Options: controllers.Options{MediaserverImage: "x"}}
	if err := r.SetupWithManager(mgr); err != nil {
		b.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = mgr.Start(mctx) }()

	// Converge: every MediaService reports its 100 pods.
	start := time.Now()
	for {
		list := &mediav1alpha1.MediaServiceList{}
		_ = k8s.List(ctx, list, client.InNamespace("fleet"))
		done := 0
		for _, ms := range list.Items {
			if ms.Status.Sessions != nil && ms.Status.Sessions.ReportingPods == podsPer {
				done++
			}
		}
		if done == services {
			break
		}
		if time.Since(start) > 3*time.Minute {
			b.Fatalf("only %d of %d MediaServices converged", done, services)
		}
		time.Sleep(500 * time.Millisecond)
	}
	b.ReportMetric(time.Since(start).Seconds(), "s-to-first-status")
	time.Sleep(15 * time.Second) // let deletion-cost writes and status settle

	// One pass, timed on its own (the ticker's passes run beside it).
	t0, c0 := time.Now(), cpuTime()
	obs.ObserveOnce(ctx)
	b.ReportMetric(float64(time.Since(t0).Milliseconds()), "ms/pass")
	b.ReportMetric(float64((cpuTime() - c0).Milliseconds()), "cpu-ms/pass")

	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	w0, c1, t1 := writes.n.Load(), cpuTime(), time.Now()
	time.Sleep(window)
	cpu := cpuTime() - c1
	elapsed := time.Since(t1)
	b.ReportMetric(100*cpu.Seconds()/elapsed.Seconds(), "%core")
	b.ReportMetric(float64(m0.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(writes.n.Load()-w0)*60/elapsed.Seconds(), "writes/min")
}
