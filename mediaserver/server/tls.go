package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certSource serves the signalling certificate from two PEM files and
// re-reads them when their content changes: a Secret volume is updated in
// place by the kubelet (cert-manager renewals), so no restart is needed.
type certSource struct {
	certFile, keyFile string
	log               *slog.Logger

	mu       sync.RWMutex
	cur      *tls.Certificate
	prevLeaf []byte // the certificate before the last reload
	certPEM  []byte
	keyPEM   []byte
	// refused counts reload attempts that found a broken pair (the old
	// certificate stays); only the first of a run is logged.
	refused atomic.Int64
}

func newCertSource(certFile, keyFile string, log *slog.Logger) (*certSource, error) {
	c := &certSource{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload reads both files and swaps the certificate in when they changed
// and form a valid pair; a half-written or broken pair keeps the old one.
func (c *certSource) reload() (bool, error) {
	certPEM, err := os.ReadFile(c.certFile)
	if err != nil {
		return false, fmt.Errorf("read TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(c.keyFile)
	if err != nil {
		return false, fmt.Errorf("read TLS key: %w", err)
	}
	c.mu.RLock()
	same := bytes.Equal(certPEM, c.certPEM) && bytes.Equal(keyPEM, c.keyPEM)
	c.mu.RUnlock()
	if same {
		return false, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	if pair.Leaf == nil && len(pair.Certificate) > 0 {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return false, fmt.Errorf("parse TLS certificate: %w", err)
		}
	}
	c.mu.Lock()
	if c.cur != nil {
		c.prevLeaf = c.cur.Certificate[0]
	}
	c.cur, c.certPEM, c.keyPEM = &pair, certPEM, keyPEM
	c.mu.Unlock()
	return true, nil
}

// watch re-reads the files every interval until stop is closed.
func (c *certSource) watch(interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		changed, err := c.reload()
		switch {
		case err != nil:
			if c.refused.Add(1) == 1 {
				c.log.Warn("TLS certificate not reloaded; keeping the current one", "err", err)
			}
		case changed:
			c.refused.Store(0)
			c.log.Info("TLS certificate reloaded", "subject", c.leaf().Subject.String(), "notAfter", c.leaf().NotAfter.UTC())
		}
	}
}

func (c *certSource) leaf() *x509.Certificate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cur.Leaf
}

// getCertificate is tls.Config.GetCertificate.
func (c *certSource) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.cur, nil
}

// serverConfig is the signalling listener's TLS configuration. HTTP/1.1
// only: WebSocket upgrades need it.
func (c *certSource) serverConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.getCertificate, NextProtos: []string{"http/1.1"}}
}

// peerConfig is the client configuration for forwarding signalling to
// another pod of the fleet. Pods are dialled by IP, which the certificate
// (issued for the public name) does not name, so the usual hostname check
// cannot apply; instead a peer must present the very certificate this pod
// serves (every pod mounts the same Secret), or the one before it while a
// renewal reaches the pods one by one. A peer with a newer one makes this
// pod re-read its files first.
func (c *certSource) peerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pinning below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("peer pod presented no certificate")
			}
			if c.knows(raw[0]) {
				return nil
			}
			if _, err := c.reload(); err == nil && c.knows(raw[0]) {
				return nil
			}
			return errors.New("peer pod's certificate is not this fleet's signalling certificate")
		},
	}
}

func (c *certSource) knows(leaf []byte) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return bytes.Equal(leaf, c.cur.Certificate[0]) || (c.prevLeaf != nil && bytes.Equal(leaf, c.prevLeaf))
}
