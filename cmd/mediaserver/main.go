// Command mediaserver is the WebRTC media server of every mediafleet pod.
// Configuration comes from the environment (see package podenv); flags
// override it for local runs.
//
// "mediaserver turn" runs the MediaService's TURN gateway instead (package
// relay), from the same image.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mediafleet/mediafleet/mediaserver/config"
	"github.com/mediafleet/mediafleet/mediaserver/relay"
	"github.com/mediafleet/mediafleet/mediaserver/server"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "turn" {
		os.Exit(runTURN())
	}
	cfg, err := config.Load()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mediaserver: invalid configuration:", err)
		os.Exit(2)
	}
	flag.StringVar(&cfg.ListenHost, "listen-host", cfg.ListenHost, "IP the listeners and the ICE mux bind to (empty: all)")
	flag.IntVar(&cfg.Port, "port", cfg.Port, "public signalling port (PORT)")
	flag.IntVar(&cfg.AdminPort, "admin-port", cfg.AdminPort, "admin port (ADMIN_PORT)")
	flag.BoolVar(&cfg.ICELoopback, "ice-loopback", cfg.ICELoopback, "gather loopback ICE candidates (local runs and tests)")
	ifaces := flag.String("ice-interfaces", "", "comma-separated interfaces ICE gathers on (empty: all)")
	flag.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error (LOG_LEVEL)")
	flag.StringVar(&cfg.LogFormat, "log-format", cfg.LogFormat, "json or text (LOG_FORMAT)")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *version {
		fmt.Println(server.Version)
		return
	}
	if *ifaces != "" {
		cfg.ICEInterfaces = strings.Split(*ifaces, ",")
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "mediaserver: invalid configuration:", err)
		os.Exit(2)
	}
	log := newLogger(cfg)
	srv, err := server.New(cfg, log)
	if err != nil {
		log.Error("start failed", "err", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := srv.Run(sigs); err != nil {
		log.Error("exit", "err", err)
		os.Exit(1)
	}
	log.Info("exited cleanly")
}

func newLogger(cfg config.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(os.Stderr, opts)
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(os.Stderr, opts)
	}
	return slog.New(h).With("pod", cfg.PodName)
}

// runTURN runs the TURN gateway until SIGTERM or SIGINT, then drains it.
func runTURN() int {
	cfg, err := relay.FromEnv(os.LookupEnv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mediaserver turn: invalid configuration:", err)
		return 2
	}
	log := newLogger(config.Config{LogLevel: cfg.LogLevel, LogFormat: cfg.LogFormat, PodName: os.Getenv("POD_NAME")})
	srv, err := relay.New(cfg, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	addr := func(a fmt.Stringer) string {
		if a == nil {
			return ""
		}
		return a.String()
	}
	log.Info("TURN gateway listening", "udp", addr(srv.UDPAddr()), "tcp", addr(srv.TCPAddr()), "tls", addr(srv.TLSAddr()), "admin", srv.AdminURL())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	srv.Drain(context.Background())
	log.Info("exited cleanly")
	return 0
}
