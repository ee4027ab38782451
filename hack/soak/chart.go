package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// writeChart draws one small line chart per figure over the churn (a grid
// of 3 × 2 panels, time on x), with each panel's min and max.
func writeChart(path string, rows []sample, o options) error {
	const pw, ph, cols, rowsN, pad = 420, 200, 3, 2, 28
	img := image.NewRGBA(image.Rect(0, 0, pw*cols, ph*rowsN+pad))
	fill(img, img.Bounds(), color.White)
	label(img, 8, 18, fmt.Sprintf("mediafleet soak: %s of churn, %.1f sessions/s opened, up to %d live, %.0f%% vanish, %.0f%% slow readers",
		o.duration, o.rate, o.maxLive, o.vanish*100, o.slow*100), color.Black)
	series := []struct {
		name string
		v    func(sample) float64
	}{
		{"goroutines", func(s sample) float64 { return float64(s.Goroutines) }},
		{"heap live (MiB)", func(s sample) float64 { return s.HeapBytes / (1 << 20) }},
		{"RSS (MiB)", func(s sample) float64 { return float64(s.RSSBytes) / (1 << 20) }},
		{"open fds", func(s sample) float64 { return float64(s.FDs) }},
		{"sessions", func(s sample) float64 { return float64(s.Sessions) }},
		{"setup p99 (ms, last 30 s)", func(s sample) float64 { return s.SetupP99Ms }},
	}
	for i, se := range series {
		x0, y0 := (i%cols)*pw, pad+(i/cols)*ph
		panel := image.Rect(x0+40, y0+24, x0+pw-12, y0+ph-20)
		fill(img, panel, color.RGBA{245, 245, 245, 255})
		lo, hi := 0.0, 1.0
		for j, r := range rows {
			v := se.v(r)
			if j == 0 || v < lo {
				lo = v
			}
			if j == 0 || v > hi {
				hi = v
			}
		}
		if hi <= lo {
			hi = lo + 1
		}
		label(img, x0+40, y0+18, fmt.Sprintf("%s  min %.1f  max %.1f", se.name, lo, hi), color.Black)
		var px, py int
		for j, r := range rows {
			x := panel.Min.X + j*(panel.Dx()-1)/max(len(rows)-1, 1)
			y := panel.Max.Y - 1 - int((se.v(r)-lo)/(hi-lo)*float64(panel.Dy()-1))
			if j > 0 {
				line(img, px, py, x, y, color.RGBA{20, 90, 200, 255})
			}
			px, py = x, y
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return png.Encode(f, img)
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.Set(x, y, c)
		}
	}
}

func label(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// line draws with Bresenham's algorithm, two pixels thick.
func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.Set(x0, y0, c)
		img.Set(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}
