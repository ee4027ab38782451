// Command demo runs the operator against a local control plane built from
// source (kube-apiserver + etcd, as in the tests), applies the sample
// MediaServices and prints what the operator made of them. It keeps running
// until Ctrl-C and writes a kubeconfig so that kubectl can look too.
//
//	make demo
package main

import (
	"context"
	"flag"
	"fmt"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers"
)

func main() {
	samples := flag.String("samples", "config/samples", "directory of MediaService manifests to apply")
	kubeconfig := flag.String("kubeconfig-out", "bin/demo.kubeconfig", "where to write a kubeconfig for kubectl")
	once := flag.Bool("once", false, "print the result and exit instead of running until Ctrl-C")
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))
	if err := run(*samples, *kubeconfig, *once); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(samplesDir, kubeconfigOut string, once bool) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(mediav1alpha1.AddToScheme(scheme))
	utilruntime.Must(monitoringv1.AddToScheme(scheme))

	env := &envtest.Environment{CRDDirectoryPaths: []string{"config/crd/bases"}, ErrorIfCRDPathMissing: true}
	fmt.Println("starting kube-apiserver and etcd from", os.Getenv("KUBEBUILDER_ASSETS"))
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	defer func() { _ = env.Stop() }()

	user, err := env.AddUser(envtest.User{Name: "demo-admin", Groups: []string{"system:masters"}}, nil)
	if err == nil {
		if kc, err := user.KubeConfig(); err == nil {
			_ = os.MkdirAll(filepath.Dir(kubeconfigOut), 0o755)
			_ = os.WriteFile(kubeconfigOut, kc, 0o600)
		}
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, Cache: controllers.CacheOptions(controllers.MonitoringCRDsServed(cfg))})
	if err != nil {
		return err
	}
	r := &controllers.MediaServiceReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("mediafleet"),
		Options: controllers.Options{MediaserverImage: "mediafleet/mediaserver:dev"}}
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { _ = mgr.Start(ctx) }()

	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := applySamples(ctx, c, samplesDir); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	if err := report(ctx, c); err != nil {
		return err
	}
	if once {
		return nil
	}
	fmt.Printf("\nThe control plane keeps running. Try:\n  kubectl --kubeconfig %s get msvc,deploy,svc,pdb\n  kubectl --kubeconfig %s describe msvc demo\nCtrl-C stops it.\n", kubeconfigOut, kubeconfigOut)
	<-ctx.Done()
	return nil
}

func applySamples(ctx context.Context, c client.Client, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "media_*.yaml"))
	if err != nil {
		return err
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		dec := yaml.NewYAMLOrJSONDecoder(strings.NewReader(string(raw)), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				break
			}
			if len(u.Object) == 0 {
				continue
			}
			u.SetNamespace("default")
			if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("demo"), client.ForceOwnership); err != nil {
				return fmt.Errorf("apply %s %s from %s: %w", u.GetKind(), u.GetName(), f, err)
			}
			fmt.Printf("applied %s/%s from %s\n", strings.ToLower(u.GetKind()), u.GetName(), f)
		}
	}
	return nil
}

func report(ctx context.Context, c client.Client) error {
	list := &mediav1alpha1.MediaServiceList{}
	if err := c.List(ctx, list, client.InNamespace("default")); err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nMEDIASERVICE\tDESIRED\tICE\tSESSIONS/POD\tCONDITIONS")
	for _, ms := range list.Items {
		ice := "mux"
		if ms.Spec.ICE.PortRange != nil {
			ice = fmt.Sprintf("ports %d-%d", ms.Spec.ICE.PortRange.Min, ms.Spec.ICE.PortRange.Max)
		} else if ms.Spec.ICE.UDPMuxPort != nil {
			ice = fmt.Sprintf("mux %d", *ms.Spec.ICE.UDPMuxPort)
		}
		if ms.Spec.ICE.HostNetwork {
			ice += " hostNetwork"
		}
		var conds []string
		for _, cd := range ms.Status.Conditions {
			conds = append(conds, cd.Type+"="+string(cd.Status)+"("+cd.Reason+")")
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\n", ms.Name, *ms.Spec.Replicas, ice, ms.Spec.Limits.MaxSessionsPerPod, strings.Join(conds, " "))
	}
	_ = w.Flush()
	fmt.Println("(this control plane has no kubelet, so media pods never start and Available stays False)")
	fmt.Println("\nchildren (owned by their MediaService):")
	deps := &appsv1.DeploymentList{}
	_ = c.List(ctx, deps, client.InNamespace("default"))
	for _, d := range deps.Items {
		ctr := d.Spec.Template.Spec.Containers[0]
		fmt.Printf("  deployment/%s replicas=%d image=%s hostNetwork=%v grace=%ds env=%d vars\n", d.Name, *d.Spec.Replicas, ctr.Image,
			d.Spec.Template.Spec.HostNetwork, *d.Spec.Template.Spec.TerminationGracePeriodSeconds, len(ctr.Env))
	}
	svcs := &corev1.ServiceList{}
	_ = c.List(ctx, svcs, client.InNamespace("default"), client.HasLabels{"app.kubernetes.io/managed-by"})
	for _, s := range svcs.Items {
		fmt.Printf("  service/%s type=%s clusterIP=%s ports=%d\n", s.Name, s.Spec.Type, s.Spec.ClusterIP, len(s.Spec.Ports))
	}
	return nil
}
