// Command image packs a static binary into a single-layer OCI image written
// as a docker-archive tarball, without Docker: what `ctr -n k8s.io images
// import` loads on a cluster that cannot pull. The image runs as 65532:65532
// with the binary as entrypoint.
//
//	go run ./hack/image -binary bin/mediaserver -path /mediaserver -tag mediafleet/mediaserver:dev -out bin/mediaserver.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	bin := flag.String("binary", "", "static binary to pack")
	path := flag.String("path", "", "where the binary lives in the image (e.g. /mediaserver)")
	tag := flag.String("tag", "", "image reference (e.g. mediafleet/mediaserver:dev)")
	out := flag.String("out", "", "tarball to write")
	flag.Parse()
	if *bin == "" || *path == "" || *tag == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "image: -binary, -path, -tag and -out are required")
		os.Exit(2)
	}
	if err := build(*bin, *path, *tag, *out); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// build writes the image tarball.
func build(bin, path, tag, out string) error {
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar(path, data))), nil
	})
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Config = v1.Config{Entrypoint: []string{path}, User: "65532:65532", Env: []string{"PATH=/"}}
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return err
	}
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", tag, err)
	}
	return tarball.WriteToFile(out, ref, img)
}

// layerTar is a tar with the binary (0755, owned by root) and a /tmp.
func layerTar(path string, data []byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 01777})
	_ = tw.WriteHeader(&tar.Header{Name: path[1:], Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
	_, _ = tw.Write(data)
	_ = tw.Close()
	return buf.Bytes()
}
