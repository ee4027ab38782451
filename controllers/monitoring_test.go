package controllers

import (
	"testing"
)

func TestSubsetOf(t *testing.T) {
	live := map[string]any{"a": map[string]any{"b": "x", "c": float64(1), "extra": true}, "l": []any{map[string]any{"k": "v", "d": 1}}}
	for i, tc := range []struct {
		want any
		ok   bool
	}{
		{map[string]any{"a": map[string]any{"b": "x", "c": int64(1)}}, true},
		{map[string]any{"a": map[string]any{"b": "y"}}, false},
		{map[string]any{"l": []any{map[string]any{"k": "v"}}}, true},
		{map[string]any{"l": []any{}}, false},
		{map[string]any{"missing": map[string]any{}}, true},
		{map[string]any{"missing": "x"}, false},
	} {
		if got := subsetOf(tc.want, live); got != tc.ok {
			t.Errorf("case %d: subsetOf = %v", i, got)
		}
	}
}
