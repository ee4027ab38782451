package rtc

import (
	"time"

	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/webrtc/v4"
)

// upHold is the least time between two moves up a simulcast layer driven
// by the bandwidth estimate (moves down happen at once).
const upHold = 4 * time.Second

// upMargin: a move up needs the layer's bitrate to fit the share with this
// much room (in tenths: 11 = 10% headroom).
const upMargin = 11

// layerRate is one layer's rank and measured bitrate (0: not measured yet).
type layerRate struct {
	rank int
	bps  int64
}

// fitLayer is the layer rank a viewer's share of its estimate allows,
// from current: down at once to the best layer that fits (the lowest when
// none does); up only when the better layer fits with upMargin and the
// last move up is at least upHold ago. rates are ranked lowest first.
func fitLayer(rates []layerRate, share int64, current int, sinceUp time.Duration) int {
	fits, fitsWithRoom, measured := -1, -1, false
	for _, r := range rates {
		if r.bps == 0 {
			continue
		}
		if !measured {
			// The lowest measured layer is the floor, fitting or not.
			fits, fitsWithRoom, measured = r.rank, r.rank, true
		}
		if r.bps <= share {
			fits = r.rank
		}
		if r.bps*upMargin/10 <= share {
			fitsWithRoom = r.rank
		}
	}
	switch {
	case !measured:
		return current
	case fits < current:
		return fits
	case fitsWithRoom > current && sinceUp >= upHold:
		return fitsWithRoom
	}
	return current
}

// watchBandwidth follows the viewer's send-side bandwidth estimate.
func (s *Session) watchBandwidth(est cc.BandwidthEstimator) {
	est.OnTargetBitrateChange(func(bps int) {
		// Without the viewer's TWCC feedback the estimator only repeats
		// its starting guess: REMB, if the viewer sends it, decides then.
		if s.twccSeen.Load() {
			s.onEstimate(bps)
		}
	})
	s.estimate.Store(int64(est.GetTargetBitrate()))
}

// Estimate is the latest bandwidth estimate towards this viewer, in bits
// per second (0 for a session that only publishes).
func (s *Session) Estimate() int64 { return s.estimate.Load() }

// onEstimate shares a new estimate among the session's video down-tracks
// (90% of it: audio and overhead take the rest) and lets each pick the
// simulcast layer that fits its share.
func (s *Session) onEstimate(bps int) {
	s.estimate.Store(int64(bps))
	s.engine.metrics.BandwidthEstimate.Observe(float64(bps))
	s.mu.Lock()
	var video []*DownTrack
	for f, sender := range s.senders {
		if d := s.downs[sender]; d != nil && f.Kind == webrtc.RTPCodecTypeVideo {
			video = append(video, d)
		}
	}
	s.mu.Unlock()
	if len(video) == 0 {
		return
	}
	share := int64(bps) * 9 / 10 / int64(len(video))
	now := time.Now()
	for _, d := range video {
		d.fitBandwidth(share, now)
	}
}

// fitBandwidth moves the down-track's bandwidth cap for a new share.
func (d *DownTrack) fitBandwidth(share int64, now time.Time) {
	layers := d.feed.layers.load()
	if len(layers) < 2 {
		return
	}
	rates := make([]layerRate, len(layers))
	for i, l := range layers {
		rates[i] = layerRate{rank: l.rank, bps: l.bps.Load()}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	current := d.bweRank
	if current == noCap {
		current = layers[len(layers)-1].rank
	}
	next := fitLayer(rates, share, current, now.Sub(d.lastUp))
	if next > current {
		d.lastUp = now
	}
	d.bweRank = next
}
