// Package servertest starts an in-process mediaserver on loopback for the
// tests of other packages (the demo page's browser tests, the load
// generator's). The server package's own tests keep theirs: they are
// inside the package this one imports.
package servertest

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/server"
)

// Start runs a server with the loopback configuration (a 1 s drain),
// adjusted by mut (nil for none), until the test ends. It logs warnings
// and errors; MEDIA_TEST_DEBUG=1 logs everything.
func Start(t testing.TB, mut func(*config.Config)) *server.Server {
	t.Helper()
	cfg := config.Loopback()
	cfg.DrainTimeout = time.Second
	if mut != nil {
		mut(&cfg)
	}
	level := slog.LevelWarn
	if os.Getenv("MEDIA_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}
