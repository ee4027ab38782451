package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"

	mediav1alpha1 "github.com/mediafleet/mediafleet/api/v1alpha1"
	"github.com/mediafleet/mediafleet/controllers/desired"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// ObserverOptions tune how media pods are polled.
type ObserverOptions struct {
	// Interval between two observations of the fleet (default 10s).
	Interval time.Duration
	// Concurrency bounds simultaneous /status requests (default 32).
	Concurrency int
	// Timeout of one /status request (default 2s).
	Timeout time.Duration
}

// Observation is the last thing learnt about one pod.
type Observation struct {
	Reachable bool
	Error     string
	Report    statusapi.Report
	At        time.Time
}

// Observer reads every running media pod's /status on the admin port and
// keeps the last report per pod. When something that matters changes
// (sessions bucket, ready/draining, leak, reachability) it sends the pod's
// MediaService to Events, so reconciles happen on change and never poll.
type Observer struct {
	Reader client.Reader
	Opts   ObserverOptions
	HTTP   *http.Client
	// Events feeds the reconciler (a source.Channel).
	Events chan event.GenericEvent

	mu   sync.RWMutex
	pods map[types.NamespacedName]Observation
	// gateways: the last /status of each TURN gateway pod (reachable
	// ones only).
	gateways map[types.NamespacedName]statusapi.GatewayReport
	// passes counts completed observation passes (tests prove a steady
	// window saw some).
	passes atomic.Int64

	membership membershipState
}

// NewObserver returns an observer over the manager's cache.
func NewObserver(r client.Reader, opts ObserverOptions) *Observer {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 32
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	return &Observer{
		Reader: r,
		Opts:   opts,
		HTTP: &http.Client{Timeout: opts.Timeout, Transport: &http.Transport{
			MaxIdleConnsPerHost: 1, IdleConnTimeout: 3 * opts.Interval,
			DialContext: (&net.Dialer{Timeout: opts.Timeout}).DialContext,
		}},
		Events:   make(chan event.GenericEvent, 1024),
		pods:     map[types.NamespacedName]Observation{},
		gateways: map[types.NamespacedName]statusapi.GatewayReport{},
	}
}

// GatewayAllocations sums the allocations the MediaService's gateway pods
// reported at the last pass, and says how many of them answered.
func (o *Observer) GatewayAllocations(ns string, pods []corev1.Pod) (allocations, reporting int32) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	for i := range pods {
		if r, ok := o.gateways[types.NamespacedName{Namespace: ns, Name: pods[i].Name}]; ok {
			allocations += int32(r.Allocations)
			reporting++
		}
	}
	return allocations, reporting
}

// Get returns the last observation of a pod.
func (o *Observer) Get(ns, name string) (Observation, bool) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	obs, ok := o.pods[types.NamespacedName{Namespace: ns, Name: name}]
	return obs, ok
}

// Start implements manager.Runnable: observe now, then every interval.
func (o *Observer) Start(ctx context.Context) error {
	t := time.NewTicker(o.Opts.Interval)
	defer t.Stop()
	for {
		o.ObserveOnce(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Passes is how many observation passes have completed.
func (o *Observer) Passes() int64 { return o.passes.Load() }

// NeedLeaderElection: only the leader acts on what it observes.
func (o *Observer) NeedLeaderElection() bool { return true }

// observable says whether a pod has something to read: running with an IP.
func observable(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != ""
}

// ObserveOnce polls every observable media pod once, with bounded
// concurrency, and signals the MediaServices whose pods changed.
func (o *Observer) ObserveOnce(ctx context.Context) {
	pods := &corev1.PodList{}
	if err := o.Reader.List(ctx, pods, client.MatchingLabels{desired.LabelManagedBy: desired.ManagedByValue}); err != nil {
		log.FromContext(ctx).Error(err, "observer: list pods")
		return
	}
	seen := make(map[types.NamespacedName]bool, len(pods.Items))
	changed := map[types.NamespacedName]bool{}  // MediaServices to reconcile
	tokens := map[types.NamespacedName]string{} // one Secret read per MediaService and pass
	var mu sync.Mutex
	sem := make(chan struct{}, o.Opts.Concurrency)
	var wg sync.WaitGroup
	for i := range pods.Items {
		p := &pods.Items[i]
		key := client.ObjectKeyFromObject(p)
		msName := p.Labels[desired.LabelMediaService]
		if gw := p.Labels[desired.LabelTURNGateway]; msName == "" && gw != "" && observable(p) {
			// A TURN gateway pod: only which member list it holds (a
			// restarted one is owed the list again).
			msKey := types.NamespacedName{Namespace: p.Namespace, Name: gw}
			token, ok := tokens[msKey]
			if !ok {
				token = o.token(ctx, p.Namespace, gw)
				tokens[msKey] = token
			}
			seen[key] = true
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c := statusapi.Client{HTTP: o.HTTP, Token: token}
				r, err := c.GatewayReport(ctx, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(adminPort(p)))))
				o.mu.Lock()
				old, had := o.gateways[key]
				if err == nil {
					o.gateways[key] = r
				} else {
					delete(o.gateways, key)
				}
				o.mu.Unlock()
				if err != nil {
					return
				}
				o.noteHeldMembership(msKey, key, r.MembershipGeneration)
				// The gateway's autoscaling follows its allocations.
				if !had || sessionsBucket(old.Allocations, 1000) != sessionsBucket(r.Allocations, 1000) {
					mu.Lock()
					changed[msKey] = true
					mu.Unlock()
				}
			}()
			continue
		}
		if msName == "" {
			continue
		}
		seen[key] = true
		if !observable(p) {
			continue
		}
		msKey := types.NamespacedName{Namespace: p.Namespace, Name: msName}
		token, ok := tokens[msKey]
		if !ok {
			token = o.token(ctx, p.Namespace, msName)
			tokens[msKey] = token
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			obs := o.fetch(ctx, p, token)
			if obs.Reachable {
				o.noteHeldMembership(msKey, key, obs.Report.MembershipGeneration)
			}
			o.mu.Lock()
			old, had := o.pods[key]
			o.pods[key] = obs
			o.mu.Unlock()
			if !had || signature(old) != signature(obs) {
				mu.Lock()
				changed[msKey] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	o.mu.Lock()
	for key := range o.pods {
		if !seen[key] {
			delete(o.pods, key)
		}
	}
	for key := range o.gateways {
		if !seen[key] {
			delete(o.gateways, key)
		}
	}
	o.mu.Unlock()
	o.deliverMembership(ctx, pods.Items)
	o.passes.Add(1)
	for ms := range changed {
		obj := &mediav1alpha1.MediaService{}
		obj.Namespace, obj.Name = ms.Namespace, ms.Name
		select {
		case o.Events <- event.GenericEvent{Object: obj}:
		case <-ctx.Done():
			return
		}
	}
}

// adminPort is the pod's container port named "admin".
func adminPort(p *corev1.Pod) int32 { return containerPort(p, desired.PortNameAdmin, 9090) }

// token is the admin token of a MediaService's pods ("" when its Secret
// is not there yet; the pod then answers 401 and is reported so).
func (o *Observer) token(ctx context.Context, namespace, msName string) string {
	tok, err := readAdminToken(ctx, o.Reader, namespace, msName)
	if err != nil {
		log.FromContext(ctx).Info("admin token unreadable", "namespace", namespace, "mediaservice", msName, "err", err)
	}
	return tok
}

func (o *Observer) fetch(ctx context.Context, p *corev1.Pod, token string) Observation {
	obs := Observation{At: time.Now()}
	c := statusapi.Client{HTTP: o.HTTP, Token: token}
	r, err := c.Report(ctx, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(adminPort(p)))))
	var se *statusapi.StatusError
	switch {
	case errors.As(err, &se):
		obs.Error = fmt.Sprintf("GET /status: HTTP %d", se.Code)
	case err != nil:
		obs.Error = "GET /status: " + shortNetErr(err)
	default:
		obs.Report, obs.Reachable = r, true
	}
	return obs
}

func shortNetErr(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return truncate(err.Error(), 160)
}

// sessionsBucket coarsens a session count so that small fluctuations of a
// busy pod do not cause a reconcile each: exact up to 10, then by 5% of the
// pod's capacity.
func sessionsBucket(active, capacity int) int {
	if active <= 10 {
		return active
	}
	step := max(capacity/20, 1)
	return 10 + active/step
}

func signature(o Observation) string {
	if !o.Reachable {
		return "unreachable"
	}
	r := o.Report
	relayed := 0 // rooms this pod relays: a room spreading to a pod shows in status.rooms
	for _, rm := range r.Rooms {
		if rm.Role == statusapi.RoomRelay {
			relayed++
		}
	}
	return fmt.Sprintf("%d/%t/%t/%t/%d", sessionsBucket(r.Sessions.Active, r.Sessions.Capacity), r.Ready, r.Draining, r.Leak.Suspected, relayed)
}
