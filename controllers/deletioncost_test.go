package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// TestCostLedger: one write per pod per interval, pruned to the living
// pods, released whole by forget.
func TestCostLedger(t *testing.T) {
	key := types.NamespacedName{Namespace: "media", Name: "demo"}
	t0 := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	const wait = 15 * time.Second
	var l costLedger
	l.prune(key, nil)
	if ok, _ := l.due(key, "a", t0, wait); !ok {
		t.Fatal("a pod never written is not due")
	}
	l.wrote(key, "a", t0)
	if ok, d := l.due(key, "a", t0.Add(5*time.Second), wait); ok || d != 10*time.Second {
		t.Fatalf("5 s after a write: due %v, retry in %v", ok, d)
	}
	if ok, _ := l.due(key, "a", t0.Add(wait), wait); !ok {
		t.Fatal("not due after the interval")
	}
	l.prune(key, map[types.UID]bool{"b": true})
	if ok, _ := l.due(key, "a", t0.Add(time.Second), wait); !ok {
		t.Fatal("a pruned pod kept its timestamp")
	}
	if len(l.keys()) != 1 {
		t.Fatalf("keys %v", l.keys())
	}
	l.forget(key)
	if len(l.keys()) != 0 {
		t.Fatalf("forget left %v", l.keys())
	}
}
