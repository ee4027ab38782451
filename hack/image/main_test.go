package main

import (
	"archive/tar"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestImageOfThePauseBinary packs the project's own pause binary and reads
// the tarball back as an image: tag, entrypoint, user, and the file.
func TestImageOfThePauseBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "pause")
	cmd := exec.Command("go", "build", "-o", bin, "../pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "pause.tar")
	if err := build(bin, "/pause", "mediafleet/pause:dev", out); err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("mediafleet/pause:dev")
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != "/pause" || cfg.Config.User != "65532:65532" || cfg.OS != "linux" {
		t.Errorf("config %+v", cfg.Config)
	}
	layers, _ := img.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want, _ := os.Stat(bin)
	tr := tar.NewReader(rc)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "pause" && h.Size == want.Size() && h.Mode&0o111 != 0 {
			found = true
		}
	}
	if !found {
		t.Error("the binary is not in the layer with its size and exec bits")
	}
}
