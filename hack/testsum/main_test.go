package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSummaryOfARun(t *testing.T) {
	var out strings.Builder
	t0 := time.Now()
	s := newSummary(&out, t0)
	input := strings.Join([]string{
		`{"Action":"start","Package":"example.test/a"}`,
		`{"Action":"run","Package":"example.test/a","Test":"TestOK"}`,
		`{"Action":"output","Package":"example.test/a","Test":"TestOK","Output":"=== RUN   TestOK\n"}`,
		`{"Action":"pass","Package":"example.test/a","Test":"TestOK","Elapsed":0.1}`,
		`{"Action":"run","Package":"example.test/a","Test":"TestBad"}`,
		`{"Action":"output","Package":"example.test/a","Test":"TestBad","Output":"    a_test.go:9: the room split\n"}`,
		`{"Action":"fail","Package":"example.test/a","Test":"TestBad","Elapsed":0.2}`,
		`{"Action":"skip","Package":"example.test/a","Test":"TestNoBrowser"}`,
		`{"Action":"output","Package":"example.test/a","Output":"FAIL\texample.test/a\t0.300s\n"}`,
		`{"Action":"fail","Package":"example.test/a","Elapsed":0.3}`,
		`{"Action":"start","Package":"example.test/b"}`,
		`{"Action":"pass","Package":"example.test/b","Test":"TestFine"}`,
		`{"Action":"pass","Package":"example.test/b","Elapsed":1.5}`,
		`{"Action":"start","Package":"example.test/slow"}`,
		`not json: a vet message`,
	}, "\n")
	if err := process(strings.NewReader(input), s); err != nil {
		t.Fatal(err)
	}
	s.tick(t0.Add(5*time.Second), 15*time.Second) // too soon: nothing
	before := out.Len()
	s.tick(time.Now().Add(time.Minute), 15*time.Second)
	if out.Len() == before || !strings.Contains(out.String(), "running example.test/slow (") {
		t.Errorf("no progress line for the running package:\n%s", out.String())
	}
	if s.finish(time.Now(), nil) {
		t.Error("a run with a failing test passed")
	}
	got := out.String()
	for _, want := range []string{
		"a_test.go:9: the room split",  // the failing test's whole output
		"FAIL\texample.test/a\t0.300s", // the package line as go test prints it
		"ok  \texample.test/b\t1.500s", // a passing package
		"not json: a vet message",      // passed through
		"skipped: example.test/a.TestNoBrowser",
		"failed: example.test/a.TestBad",
		"never finished: example.test/slow",
		"2 passed, 1 failed, 1 skipped", // the closing count
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "=== RUN   TestOK") {
		t.Errorf("a passing test's output was printed:\n%s", got)
	}
}

func TestSummaryPassesOnlyACleanRun(t *testing.T) {
	var out strings.Builder
	s := newSummary(&out, time.Now())
	_ = process(strings.NewReader(`{"Action":"pass","Package":"p","Test":"T"}`+"\n"+`{"Action":"pass","Package":"p","Elapsed":1}`), s)
	if !s.finish(time.Now(), nil) {
		t.Errorf("a clean run failed:\n%s", out.String())
	}
	s = newSummary(&out, time.Now())
	_ = process(strings.NewReader(`{"Action":"build-output","ImportPath":"p [p.test]","Output":"p.go:1: syntax error\n"}`+"\n"+`{"Action":"build-fail","ImportPath":"p [p.test]"}`), s)
	if s.finish(time.Now(), nil) || !strings.Contains(out.String(), "syntax error") {
		t.Errorf("a build failure passed or was not shown:\n%s", out.String())
	}
	s = newSummary(&out, time.Now())
	if s.finish(time.Now(), errors.New("unexpected EOF")) {
		t.Error("a broken input passed")
	}
}

// A test binary that dies under a running test (a panic in a goroutine,
// a timeout) ends the package without ending the test: its output is what
// says why, and it counts as failed.
func TestSummaryShowsATestTheBinaryDiedUnder(t *testing.T) {
	var out strings.Builder
	s := newSummary(&out, time.Now())
	input := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestDone"}`,
		`{"Action":"pass","Package":"p","Test":"TestDone"}`,
		`{"Action":"run","Package":"p","Test":"TestCut"}`,
		`{"Action":"output","Package":"p","Test":"TestCut","Output":"panic: send on closed channel\n"}`,
		`{"Action":"output","Package":"p","Test":"TestCut","Output":"goroutine 7 [running]:\n"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t1.000s\n"}`,
		`{"Action":"fail","Package":"p","Elapsed":1}`,
	}, "\n")
	if err := process(strings.NewReader(input), s); err != nil {
		t.Fatal(err)
	}
	if s.finish(time.Now(), nil) {
		t.Error("a package that died passed")
	}
	got := out.String()
	for _, want := range []string{"panic: send on closed channel", "goroutine 7 [running]:", "failed: p.TestCut (did not finish)", "1 passed, 1 failed"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
