package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/sdp/v3"
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
	if err := s.negotiate(ctx, opts.endpoint(base, "whip", room)); err != nil {
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

// PublishSimulcastIVF publishes the IVF file's VP8 frames as a simulcast
// track with one layer per rid (RFC 8853), lowest first: the top layer
// carries every frame, the one below every second frame, the one below
// that every fourth, so the layers' bitrates differ as real layers' do
// (every layer has the keyframe each loop starts with). Each
// packet carries the mid and rid header extensions (pion leaves them to
// the application). The file's keyframes (it loops) are where a viewer can
// switch layers.
func PublishSimulcastIVF(ctx context.Context, base, room string, ivf []byte, rids []string, opts Options) (*Session, error) {
	if _, _, err := ivfreader.NewWith(bytes.NewReader(ivf)); err != nil {
		return nil, err
	}
	if len(rids) < 2 {
		return nil, errors.New("simulcast needs two rids or more")
	}
	s := &Session{opts: opts, stop: make(chan struct{})}
	pc, err := opts.API.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	s.PC = pc
	var tracks []*webrtc.TrackLocalStaticRTP
	var sender *webrtc.RTPSender
	for i, rid := range rids {
		track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "ivf", webrtc.WithRTPStreamID(rid))
		if err != nil {
			return nil, errors.Join(err, pc.Close())
		}
		if i == 0 {
			if sender, err = pc.AddTrack(track); err != nil {
				return nil, errors.Join(err, pc.Close())
			}
		} else if err := sender.AddEncoding(track); err != nil {
			return nil, errors.Join(err, pc.Close())
		}
		tracks = append(tracks, track)
	}
	s.drainRTCP(sender)
	if err := s.negotiate(ctx, opts.endpoint(base, "whip", room)); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	var midID, ridID uint8
	for _, ext := range sender.GetParameters().HeaderExtensions {
		switch ext.URI {
		case sdp.SDESMidURI:
			midID = uint8(ext.ID)
		case sdp.SDESRTPStreamIDURI:
			ridID = uint8(ext.ID)
		}
	}
	mid := ""
	for _, tr := range pc.GetTransceivers() {
		if tr.Sender() == sender {
			mid = tr.Mid()
		}
	}
	if midID == 0 || ridID == 0 || mid == "" {
		return nil, errors.Join(errors.New("the answer did not accept the mid and rid header extensions"), s.Close())
	}
	layers := make([]simulcastLayer, len(tracks))
	for i, track := range tracks {
		layers[i] = simulcastLayer{track: track, rid: track.RID(),
			packetizer: rtp.NewPacketizer(1200, 0, 0, &codecs.VP8Payloader{EnablePictureID: true}, rtp.NewRandomSequencer(), 90000)}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			n := 0
			if done := s.playIVFFrames(ivf, func(frame []byte, dur time.Duration) {
				defer func() { n++ }()
				for i, l := range layers {
					samples := uint32(dur.Seconds() * 90000)
					if every := 1 << (len(layers) - 1 - i); n%every != 0 {
						l.packetizer.SkipSamples(samples) // the layer's clock runs on
						continue
					}
					for _, p := range l.packetizer.Packetize(frame, samples) {
						_ = p.Header.SetExtension(midID, []byte(mid))
						_ = p.Header.SetExtension(ridID, []byte(l.rid))
						if err := l.track.WriteRTP(p); err == nil {
							s.Sent.Add(1)
						}
					}
				}
			}); done {
				return
			}
		}
	}()
	return s, nil
}

type simulcastLayer struct {
	track      *webrtc.TrackLocalStaticRTP
	rid        string
	packetizer rtp.Packetizer
}

// playIVF writes one pass of the file at its frame rate; true when stopped.
func (s *Session) playIVF(track *webrtc.TrackLocalStaticSample, ivf []byte) bool {
	return s.playIVFFrames(ivf, func(frame []byte, dur time.Duration) {
		if err := track.WriteSample(media.Sample{Data: frame, Duration: dur}); err == nil {
			s.Sent.Add(1)
		}
	})
}

// playIVFFrames hands each frame of one pass of the file to write at the
// file's frame rate; true when stopped.
func (s *Session) playIVFFrames(ivf []byte, write func(frame []byte, dur time.Duration)) bool {
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
		write(frame, frameDur)
	}
}
