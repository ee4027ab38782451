package rtc

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// downLocal is a down-track's pion TrackLocal. pion's TrackLocalStaticRTP
// writes the primary stream only; a down-track also writes
// retransmissions on the RTX stream the viewer negotiated (RFC 4588) and
// header extensions the viewer negotiated (abs-send-time), so it keeps
// what each binding negotiated. It is bound to one viewer's sender (twice
// only briefly, while pion replaces a track).
type downLocal struct {
	codec        webrtc.RTPCodecCapability
	id, streamID string

	mu       sync.Mutex // Bind/Unbind
	bindings atomic.Pointer[[]*binding]
}

// binding is what one viewer's sender negotiated for the track.
type binding struct {
	id          string
	ssrc, rtx   uint32 // rtx: 0 without RTX
	pt, ptRTX   uint8
	absSendTime uint8 // header extension id, 0 when not negotiated
	w           webrtc.TrackLocalWriter
}

var errUnsupportedCodec = errors.New("the viewer did not negotiate the feed's codec")

func newDownLocal(codec webrtc.RTPCodecCapability, id, streamID string) *downLocal {
	return &downLocal{codec: codec, id: id, streamID: streamID}
}

// Bind keeps what the viewer negotiated: the codec matching the feed's
// (same MIME type and fmtp line, else same MIME type and clock rate), its
// RTX payload type and SSRC, and the abs-send-time extension id.
func (t *downLocal) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	codecs := ctx.CodecParameters()
	match := -1
	for i, c := range codecs {
		if strings.EqualFold(c.MimeType, t.codec.MimeType) && c.ClockRate == t.codec.ClockRate {
			if c.SDPFmtpLine == t.codec.SDPFmtpLine {
				match = i
				break
			}
			if match < 0 {
				match = i
			}
		}
	}
	if match < 0 {
		return webrtc.RTPCodecParameters{}, errUnsupportedCodec
	}
	c := codecs[match]
	b := &binding{id: ctx.ID(), ssrc: uint32(ctx.SSRC()), pt: uint8(c.PayloadType), w: ctx.WriteStream()}
	if rtx := ctx.SSRCRetransmission(); rtx != 0 {
		apt := "apt=" + strconv.Itoa(int(c.PayloadType))
		for _, r := range codecs {
			if strings.EqualFold(r.MimeType, webrtc.MimeTypeRTX) && r.SDPFmtpLine == apt {
				b.rtx, b.ptRTX = uint32(rtx), uint8(r.PayloadType)
				break
			}
		}
	}
	for _, e := range ctx.HeaderExtensions() {
		if e.URI == sdp.ABSSendTimeURI && e.ID > 0 && e.ID < 15 {
			b.absSendTime = uint8(e.ID)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var next []*binding
	if cur := t.bindings.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, b)
	t.bindings.Store(&next)
	return c, nil
}

// Unbind forgets a binding (its sender stopped or took another track).
func (t *downLocal) Unbind(ctx webrtc.TrackLocalContext) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.bindings.Load()
	if cur == nil {
		return webrtc.ErrUnbindFailed
	}
	next := make([]*binding, 0, len(*cur))
	for _, b := range *cur {
		if b.id != ctx.ID() {
			next = append(next, b)
		}
	}
	if len(next) == len(*cur) {
		return webrtc.ErrUnbindFailed
	}
	t.bindings.Store(&next)
	return nil
}

func (t *downLocal) ID() string       { return t.id }
func (t *downLocal) RID() string      { return "" }
func (t *downLocal) StreamID() string { return t.streamID }

func (t *downLocal) Kind() webrtc.RTPCodecType {
	if strings.HasPrefix(strings.ToLower(t.codec.MimeType), "audio/") {
		return webrtc.RTPCodecTypeAudio
	}
	return webrtc.RTPCodecTypeVideo
}

// extScratch is a down-track's room for one packet's header extension
// (guarded by the down-track's lock): no allocation per packet.
type extScratch struct {
	exts [2]rtp.Extension // one of ours, room for the TWCC interceptor's
	abs  [3]byte
}

// set points h's extensions at the binding's: abs-send-time when
// negotiated, none otherwise (the publisher's ids mean nothing here).
func (x *extScratch) set(h *rtp.Header, b *binding) {
	h.Extension, h.Extensions, h.ExtensionProfile = false, nil, 0
	if b.absSendTime == 0 {
		return
	}
	v := absSendTime(time.Now())
	x.abs = [3]byte{byte(v >> 16), byte(v >> 8), byte(v)}
	h.Extensions = x.exts[:0:2]
	_ = h.SetExtension(b.absSendTime, x.abs[:]) // an id of 1-14 and 3 bytes always fit
}

// absSendTime is the 6.18 fixed-point seconds of the abs-send-time
// extension (24 bits: 6 of seconds, 18 of fraction).
func absSendTime(t time.Time) uint32 {
	// Only the seconds modulo 64 survive: taking them first keeps the
	// shift below from overflowing (today's UnixNano << 18 would).
	ns := uint64(t.UnixNano()) % (64 * uint64(time.Second))
	return uint32((ns<<18)/uint64(time.Second)) & 0xFFFFFF
}

// write sends one packet (header h, rewritten for the viewer) to every
// binding. h's SSRC, payload type and extensions are overwritten.
func (t *downLocal) write(h *rtp.Header, payload []byte, x *extScratch) error {
	bs := t.bindings.Load()
	if bs == nil {
		return nil
	}
	var errs []error
	for _, b := range *bs {
		h.SSRC, h.PayloadType = b.ssrc, b.pt
		x.set(h, b)
		if _, err := b.w.WriteRTP(h, payload); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// retransmit sends one cached packet again (header h, payload p, already
// in the viewer's numbering): on the RTX stream where the viewer
// negotiated one, its original sequence number first in the payload and
// the stream's own sequence number (*rtxSeq) in the header; else as it
// was. scratch holds the RTX payload.
func (t *downLocal) retransmit(h *rtp.Header, payload []byte, x *extScratch, rtxSeq *uint16, scratch *[]byte) (rtx bool, err error) {
	bs := t.bindings.Load()
	if bs == nil {
		return false, nil
	}
	var errs []error
	for _, b := range *bs {
		hh, pl := *h, payload
		hh.SSRC, hh.PayloadType = b.ssrc, b.pt
		if b.rtx != 0 {
			buf := append((*scratch)[:0], byte(h.SequenceNumber>>8), byte(h.SequenceNumber))
			buf = append(buf, payload...)
			*scratch, pl = buf, buf
			*rtxSeq++
			hh.SSRC, hh.PayloadType, hh.SequenceNumber = b.rtx, b.ptRTX, *rtxSeq
			hh.Padding, hh.PaddingSize = false, 0
			rtx = true
		}
		x.set(&hh, b)
		if _, err := b.w.WriteRTP(&hh, pl); err != nil {
			errs = append(errs, err)
		}
	}
	return rtx, errors.Join(errs...)
}
