// Command alertreceiver is the local cluster's Alertmanager webhook
// receiver: it records every notification Alertmanager posts (POST /alerts,
// the webhook payload of Alertmanager's docs) and serves them back to the
// end-to-end suite and to whoever looks (GET /notifications, oldest first,
// as JSON). It keeps the last 1,000 notifications of at most 1 MiB each.
//
//	alertreceiver -listen :9095
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"
)

const (
	maxBody          = 1 << 20
	maxNotifications = 1000
)

// notification is one webhook call as received.
type notification struct {
	ReceivedAt time.Time       `json:"receivedAt"`
	Payload    json.RawMessage `json:"payload"`
}

type store struct {
	mu   sync.Mutex
	list []notification
}

func (s *store) add(n notification) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, n)
	if len(s.list) > maxNotifications {
		s.list = s.list[len(s.list)-maxNotifications:]
	}
}

func (s *store) all() []notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]notification{}, s.list...)
}

func handler(s *store, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /alerts", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil || len(body) > maxBody {
			http.Error(w, "body unreadable or over 1 MiB", http.StatusRequestEntityTooLarge)
			return
		}
		if !json.Valid(body) {
			http.Error(w, "not JSON", http.StatusBadRequest)
			return
		}
		s.add(notification{ReceivedAt: time.Now().UTC(), Payload: body})
		log.Info("notification", "bytes", len(body))
	})
	mux.HandleFunc("GET /notifications", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.all())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

func main() {
	listen := flag.String("listen", ":9095", "address to serve on")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	srv := &http.Server{Addr: *listen, Handler: handler(&store{}, log), ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	log.Info("alertreceiver listening", "addr", *listen)
	if err := srv.ListenAndServe(); err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}
