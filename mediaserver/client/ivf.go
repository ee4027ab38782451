package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
)

// PublishIVF opens a WHIP session that publishes the VP8 frames of an IVF
// file (looped) as real video a browser can decode.
func PublishIVF(ctx context.Context, base, room string, ivf []byte, opts Options) (*Session, error) {
	if _, _, err := ivfreader.NewWith(bytes.NewReader(ivf)); err != nil {
		return nil, err
	}
	s := &Session{opts: opts, stop: make(chan struct{})}
	pc, err := opts.API.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	s.PC = pc
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "ivf")
	if err != nil {
		return nil, errors.Join(err, pc.Close())
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		return nil, errors.Join(err, pc.Close())
	}
	s.drainRTCP(sender)
	if err := s.negotiate(ctx, base+"/whip/"+url.PathEscape(room)); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			if done := s.playIVF(track, ivf); done {
				return
			}
		}
	}()
	return s, nil
}

// playIVF writes one pass of the file at its frame rate; true when stopped.
func (s *Session) playIVF(track *webrtc.TrackLocalStaticSample, ivf []byte) bool {
	r, hdr, err := ivfreader.NewWith(bytes.NewReader(ivf))
	if err != nil {
		return true
	}
	frameDur := time.Duration(float64(time.Second) * float64(hdr.TimebaseNumerator) / float64(hdr.TimebaseDenominator))
	if frameDur <= 0 || frameDur > time.Second {
		frameDur = time.Second / 30
	}
	tick := time.NewTicker(frameDur)
	defer tick.Stop()
	for {
		frame, _, err := r.ParseNextFrame()
		if err == io.EOF {
			return false
		}
		if err != nil {
			return true
		}
		select {
		case <-s.stop:
			return true
		case <-tick.C:
		}
		if err := track.WriteSample(media.Sample{Data: frame, Duration: frameDur}); err == nil {
			s.Sent.Add(1)
		}
	}
}
