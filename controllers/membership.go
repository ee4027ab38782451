package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/mediafleet/mediafleet/mediaserver/statusapi"
)

// membershipState is what the observer last delivered per MediaService.
type membershipState struct {
	mu        sync.Mutex
	lists     map[types.NamespacedName]statusapi.Membership
	delivered map[types.NamespacedName]int64 // per pod: generation it holds
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
			Address:      net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(containerPort(p, portNameSignal, 8080)))),
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
	m := &o.membership
	m.mu.Lock()
	if m.lists == nil {
		m.lists = map[types.NamespacedName]statusapi.Membership{}
		m.delivered = map[types.NamespacedName]int64{}
	}
	m.mu.Unlock()

	byMS := map[types.NamespacedName][]*corev1.Pod{}
	alive := map[types.NamespacedName]bool{}
	for i := range pods {
		p := &pods[i]
		ms := p.Labels[LabelMediaService]
		if ms == "" {
			continue
		}
		key := types.NamespacedName{Namespace: p.Namespace, Name: ms}
		byMS[key] = append(byMS[key], p)
		alive[types.NamespacedName{Namespace: p.Namespace, Name: p.Name}] = true
	}
	type send struct {
		pod  types.NamespacedName
		addr string
		list statusapi.Membership
	}
	var sends []send
	m.mu.Lock()
	for key := range m.lists {
		if _, ok := byMS[key]; !ok {
			delete(m.lists, key)
		}
	}
	for pod := range m.delivered {
		if !alive[pod] {
			delete(m.delivered, pod)
		}
	}
	for key, ps := range byMS {
		members := o.members(ps)
		cur := m.lists[key]
		if cur.Generation == 0 || !sameMembers(cur.Members, members) {
			cur = statusapi.Membership{APIVersion: statusapi.APIVersion,
				Generation: max(cur.Generation+1, time.Now().UnixNano()), Members: members}
			m.lists[key] = cur
		}
		for _, mb := range members {
			podKey := types.NamespacedName{Namespace: key.Namespace, Name: mb.Name}
			if m.delivered[podKey] < cur.Generation {
				sends = append(sends, send{podKey, mb.AdminAddress, cur})
			}
		}
	}
	m.mu.Unlock()

	sem := make(chan struct{}, o.Opts.Concurrency)
	var wg sync.WaitGroup
	for _, sd := range sends {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := o.putMembership(ctx, sd.addr, sd.list); err != nil {
				log.FromContext(ctx).V(1).Info("membership not delivered; retrying next pass", "pod", sd.pod, "err", err)
				return
			}
			m.mu.Lock()
			m.delivered[sd.pod] = sd.list.Generation
			m.mu.Unlock()
		}()
	}
	wg.Wait()
}

func (o *Observer) putMembership(ctx context.Context, adminAddr string, list statusapi.Membership) error {
	body, err := json.Marshal(list)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+adminAddr+statusapi.MembershipPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK:
		return nil
	case http.StatusConflict:
		// The pod holds a newer list (another operator instance); it is
		// not ours to overwrite.
		return nil
	default:
		return fmt.Errorf("PUT %s: HTTP %d", statusapi.MembershipPath, resp.StatusCode)
	}
}
