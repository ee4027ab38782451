package controllers

import (
	"context"
	"errors"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/mediafleet/mediafleet/controllers/desired"
	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// membershipState is what the observer last delivered per MediaService.
type membershipState struct {
	mu        sync.Mutex
	lists     map[types.NamespacedName]statusapi.Membership
	delivered map[types.NamespacedName]int64 // per pod: generation it holds
	// refused: MediaServices one of whose pods answered 409 (it holds a
	// newer generation than ours): their next list starts above it.
	refused map[types.NamespacedName]bool
}

func containerPort(p *corev1.Pod, name string, fallback int32) int32 {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == name {
				return port.ContainerPort
			}
		}
	}
	return fallback
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// members lists a MediaService's pods as the membership protocol describes
// them, sorted by name.
func (o *Observer) members(pods []*corev1.Pod) []statusapi.Member {
	var out []statusapi.Member
	for _, p := range pods {
		if p.Status.PodIP == "" {
			continue
		}
		draining := p.DeletionTimestamp != nil
		if obs, ok := o.Get(p.Namespace, p.Name); ok && obs.Reachable && obs.Report.Draining {
			draining = true
		}
		out = append(out, statusapi.Member{
			Name:         p.Name,
			Address:      net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(containerPort(p, desired.PortNameSignal, 8080)))),
			AdminAddress: net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(adminPort(p)))),
			Ready:        podReady(p) && !draining,
			Draining:     draining,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sameMembers(a, b []statusapi.Member) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// deliverMembership sends each MediaService's member list to its pods when
// the list changed, or to pods that do not hold the current one yet. The
// generation comes from the clock (and always grows), so a restarted
// operator never sends a list older than one a pod holds.
func (o *Observer) deliverMembership(ctx context.Context, pods []corev1.Pod) {
	byMS := map[types.NamespacedName][]*corev1.Pod{}
	alive := map[types.NamespacedName]bool{}
	for i := range pods {
		p := &pods[i]
		ms := p.Labels[desired.LabelMediaService]
		if gw := p.Labels[desired.LabelTURNGateway]; ms == "" && gw != "" {
			alive[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = true
			continue
		}
		if ms == "" {
			continue
		}
		key := types.NamespacedName{Namespace: p.Namespace, Name: ms}
		byMS[key] = append(byMS[key], p)
		alive[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = true
	}
	m := &o.membership
	m.mu.Lock()
	m.init()
	for key := range m.lists {
		if _, ok := byMS[key]; !ok {
			delete(m.lists, key)
			delete(m.refused, key)
		}
	}
	for pod := range m.delivered {
		if !alive[pod] {
			delete(m.delivered, pod)
		}
	}
	m.mu.Unlock()
	gateways := gatewayPods(pods)
	var all []membershipSend
	for key, ps := range byMS {
		all = append(all, o.membershipSends(ctx, key, ps, gateways[key])...)
	}
	o.sendMembership(ctx, all)
}

// gatewayPods are the TURN gateway pods (running, with an address) by
// MediaService: they get the member list (the media pods they may relay
// to) without being members.
func gatewayPods(pods []corev1.Pod) map[types.NamespacedName][]*corev1.Pod {
	out := map[types.NamespacedName][]*corev1.Pod{}
	for i := range pods {
		p := &pods[i]
		gw := p.Labels[desired.LabelTURNGateway]
		if gw == "" || p.Labels[desired.LabelMediaService] != "" || !observable(p) || p.DeletionTimestamp != nil {
			continue
		}
		key := types.NamespacedName{Namespace: p.Namespace, Name: gw}
		out[key] = append(out[key], p)
	}
	return out
}

// DeliverMembershipFor brings one MediaService's pods up to date with the
// member list its pods (as cached) describe, at once: the reconciler calls
// it on every pod change, so a pod that turns ready learns within moments
// that it may own rooms, not at the next observation pass.
func (o *Observer) DeliverMembershipFor(ctx context.Context, key types.NamespacedName, pods, gateways []corev1.Pod) {
	ps := make([]*corev1.Pod, 0, len(pods))
	for i := range pods {
		ps = append(ps, &pods[i])
	}
	o.sendMembership(ctx, o.membershipSends(ctx, key, ps, gatewayPods(gateways)[key]))
}

// noteHeldMembership compares the generation a pod reports holding with
// the one delivered to it. A pod that holds something else (restarted, or
// sent a list by someone else) is owed the current list again; one that
// holds a newer generation than ours makes the next list start above it.
func (o *Observer) noteHeldMembership(ms, pod types.NamespacedName, held int64) {
	m := &o.membership
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	cur, ok := m.lists[ms]
	if !ok || held == m.delivered[pod] {
		return
	}
	delete(m.delivered, pod)
	if held > cur.Generation {
		m.refused[ms] = true
	}
}

// HoldsCurrentMembership says whether pod holds the MediaService's current
// member list (the one computed from the pods as last seen).
func (o *Observer) HoldsCurrentMembership(key types.NamespacedName, pod string) bool {
	m := &o.membership
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.lists[key]
	return ok && cur.Generation > 0 && m.delivered[types.NamespacedName{Namespace: key.Namespace, Name: pod}] >= cur.Generation
}

func (m *membershipState) init() {
	if m.lists == nil {
		m.lists = map[types.NamespacedName]statusapi.Membership{}
		m.delivered = map[types.NamespacedName]int64{}
		m.refused = map[types.NamespacedName]bool{}
	}
}

type membershipSend struct {
	ms    types.NamespacedName
	pod   types.NamespacedName
	addr  string
	token string
	list  statusapi.Membership
}

// membershipSends updates the MediaService's current list from its pods and
// returns the deliveries still owed.
func (o *Observer) membershipSends(ctx context.Context, key types.NamespacedName, ps, gateways []*corev1.Pod) []membershipSend {
	members := o.members(ps)
	// The highest generation a pod said it holds (its /status): a list
	// that must win over a refused one starts above it. Pods refuse
	// generations more than a day ahead of their clock, so this cannot be
	// pushed out of reach.
	var held int64
	for _, p := range ps {
		if obs, ok := o.Get(p.Namespace, p.Name); ok && obs.Reachable {
			held = max(held, obs.Report.MembershipGeneration)
		}
	}
	token := o.token(ctx, key.Namespace, key.Name)
	m := &o.membership
	m.mu.Lock()
	defer m.mu.Unlock()
	m.init()
	cur := m.lists[key]
	if cur.Generation == 0 || !sameMembers(cur.Members, members) || m.refused[key] {
		next := max(cur.Generation+1, time.Now().UnixNano())
		if m.refused[key] {
			next = max(next, held+1)
		}
		cur = statusapi.Membership{APIVersion: statusapi.APIVersion, Generation: next, Members: members}
		m.lists[key] = cur
		delete(m.refused, key)
	}
	var sends []membershipSend
	for _, mb := range members {
		podKey := types.NamespacedName{Namespace: key.Namespace, Name: mb.Name}
		if m.delivered[podKey] < cur.Generation {
			sends = append(sends, membershipSend{ms: key, pod: podKey, addr: mb.AdminAddress, token: token, list: cur})
		}
	}
	for _, p := range gateways {
		podKey := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
		if m.delivered[podKey] < cur.Generation {
			addr := net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(adminPort(p))))
			sends = append(sends, membershipSend{ms: key, pod: podKey, addr: addr, token: token, list: cur})
		}
	}
	return sends
}

// sendMembership delivers lists with bounded concurrency and records what
// each pod now holds.
func (o *Observer) sendMembership(ctx context.Context, sends []membershipSend) {
	m := &o.membership
	sem := make(chan struct{}, o.Opts.Concurrency)
	var wg sync.WaitGroup
	for _, sd := range sends {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := o.putMembership(ctx, sd.addr, sd.token, sd.list); err != nil {
				log.FromContext(ctx).V(1).Info("membership not delivered; retrying", "pod", sd.pod, "err", err)
				// 409: the pod holds a newer generation. Not delivered: the
				// next list goes above what the pods hold.
				if errors.Is(err, statusapi.ErrHoldsNewer) {
					m.mu.Lock()
					m.refused[sd.ms] = true
					m.mu.Unlock()
				}
				return
			}
			m.mu.Lock()
			m.delivered[sd.pod] = max(m.delivered[sd.pod], sd.list.Generation)
			m.mu.Unlock()
		}()
	}
	wg.Wait()
}

func (o *Observer) putMembership(ctx context.Context, adminAddr, token string, list statusapi.Membership) error {
	c := statusapi.Client{HTTP: o.HTTP, Token: token}
	return c.PutMembership(ctx, adminAddr, list)
}
