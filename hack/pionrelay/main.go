// Command pionrelay is the baseline of the forwarding benchmarks: the
// plainest relay pion's documentation shows, publisher → one
// TrackLocalStaticRTP per track → every viewer, with pion's defaults
// (default codecs, default interceptors: NACK responder per stream,
// reports, TWCC), speaking WHIP and WHEP without trickle so that the same
// clients drive it and the mediaserver. It gathers on loopback only and is
// meant for benchmarks on this machine.
//
//	pionrelay -listen 127.0.0.1:0   # prints "listening on 127.0.0.1:PORT"
package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/webrtc/v4"
)

type room struct {
	mu     sync.Mutex
	tracks []*webrtc.TrackLocalStaticRTP
	ready  chan struct{} // closed once the publisher's audio and video arrived
}

type relay struct {
	api   *webrtc.API
	mu    sync.Mutex
	rooms map[string]*room
	pcs   map[string]*webrtc.PeerConnection
}

func (r *relay) room(name string) *room {
	r.mu.Lock()
	defer r.mu.Unlock()
	rm := r.rooms[name]
	if rm == nil {
		rm = &room{ready: make(chan struct{})}
		r.rooms[name] = rm
	}
	return rm
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// answer applies offer to pc, runs beforeAnswer, and answers 201 with the
// complete answer (gathering done) and a Location to DELETE.
func (r *relay) answer(w http.ResponseWriter, req *http.Request, pc *webrtc.PeerConnection, kind string, beforeAnswer func() error) {
	offer, err := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	if err == nil {
		err = pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)})
	}
	if err == nil && beforeAnswer != nil {
		err = beforeAnswer()
	}
	var ans webrtc.SessionDescription
	if err == nil {
		ans, err = pc.CreateAnswer(nil)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err == nil {
		err = pc.SetLocalDescription(ans)
	}
	if err != nil {
		_ = pc.Close()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	<-gathered
	id := newID()
	r.mu.Lock()
	r.pcs[id] = pc
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/"+kind+"/"+req.PathValue("room")+"/"+id)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, pc.LocalDescription().SDP)
}

func (r *relay) whip(w http.ResponseWriter, req *http.Request) {
	rm := r.room(req.PathValue("room"))
	pc, err := r.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	pc.OnTrack(func(remote *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		local, err := webrtc.NewTrackLocalStaticRTP(remote.Codec().RTPCodecCapability, remote.ID(), "relay")
		if err != nil {
			return
		}
		rm.mu.Lock()
		rm.tracks = append(rm.tracks, local)
		if len(rm.tracks) == 2 {
			close(rm.ready)
		}
		rm.mu.Unlock()
		buf := make([]byte, 1500)
		for {
			n, _, err := remote.Read(buf)
			if err != nil {
				return
			}
			if _, err := local.Write(buf[:n]); err != nil && !errors.Is(err, io.ErrClosedPipe) {
				return
			}
		}
	})
	r.answer(w, req, pc, "whip", nil)
}

func (r *relay) whep(w http.ResponseWriter, req *http.Request) {
	rm := r.room(req.PathValue("room"))
	select {
	case <-rm.ready:
	case <-time.After(10 * time.Second):
		http.Error(w, "nothing published", http.StatusNotFound)
		return
	}
	pc, err := r.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	r.answer(w, req, pc, "whep", func() error {
		rm.mu.Lock()
		defer rm.mu.Unlock()
		for _, t := range rm.tracks {
			sender, err := pc.AddTrack(t)
			if err != nil {
				return err
			}
			go func() {
				for {
					if _, _, err := sender.ReadRTCP(); err != nil {
						return
					}
				}
			}()
		}
		return nil
	})
}

func (r *relay) del(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	pc := r.pcs[req.PathValue("id")]
	delete(r.pcs, req.PathValue("id"))
	r.mu.Unlock()
	if pc == nil {
		http.NotFound(w, req)
		return
	}
	_ = pc.Close()
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HTTP address (loopback)")
	flag.Parse()
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		log.Fatal(err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		log.Fatal(err)
	}
	r := &relay{api: webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir)),
		rooms: map[string]*room{}, pcs: map[string]*webrtc.PeerConnection{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /whip/{room}", r.whip)
	mux.HandleFunc("POST /whep/{room}", r.whep)
	mux.HandleFunc("DELETE /whip/{room}/{id}", r.del)
	mux.HandleFunc("DELETE /whep/{room}/{id}", r.del)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	_ = os.Stdout.Sync()
	log.Fatal((&http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}).Serve(ln))
}
