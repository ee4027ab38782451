package controllers

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/mediafleet/mediafleet/controllers/desired"
)

// adminTokenBytes is the token's entropy (hex-encoded in the Secret).
const adminTokenBytes = 32

// errForeignSecret: a Secret of the admin token's name exists but this
// MediaService does not control it; it is never used or overwritten.
var errForeignSecret = errors.New("not controlled by this MediaService")

// reconcileAdminToken makes sure the MediaService's admin token Secret
// exists with a usable token. The token is random and made once: it is
// created, never applied (an apply would need the value in every
// reconcile), and never logged.
func (r *MediaServiceReconciler) reconcileAdminToken(ctx context.Context, sc *scope) (ctrl.Result, error) {
	return result(r.ensureAdminToken(ctx, sc))
}

func (r *MediaServiceReconciler) ensureAdminToken(ctx context.Context, sc *scope) error {
	tok, err := r.ensureGeneratedSecret(ctx, sc, generatedSecret{
		name: desired.AdminTokenSecretName(sc.ms), key: desired.AdminTokenKey, what: "admin token",
		labels: desired.CommonLabels(sc.ms), minLen: 2 * adminTokenBytes, generate: newAdminToken,
	})
	if err == nil {
		// The Deployment of this same reconcile carries the hash at
		// once (the cache may not hold a Secret created moments ago: a
		// Deployment first made without it would roll its new pods).
		sc.adminTokenHash = tokenHash(tok)
	}
	return err
}

// generatedSecret is a Secret whose value the operator makes (random,
// once): the admin token, the TURN gateway's shared secret.
type generatedSecret struct {
	name, key, what string
	labels          map[string]string
	minLen          int // a shorter value (emptied or cut by someone) is made anew
	generate        func() (string, error)
}

// ensureGeneratedSecret makes sure the Secret exists with a usable value
// and returns it. It is created, never applied (an apply would need the
// value in every reconcile), and never logged; a Secret of its name that
// this MediaService does not control is never used or overwritten.
func (r *MediaServiceReconciler) ensureGeneratedSecret(ctx context.Context, sc *scope, g generatedSecret) (string, error) {
	ms := sc.ms
	sec := &corev1.Secret{}
	err := r.Get(ctx, types.NamespacedName{Namespace: ms.Namespace, Name: g.name}, sec)
	switch {
	case apierrors.IsNotFound(err):
		v, err := g.generate()
		if err != nil {
			return "", err
		}
		sec = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: g.name, Namespace: ms.Namespace, Labels: g.labels},
			Type:       corev1.SecretTypeOpaque,
			Data:       map[string][]byte{g.key: []byte(v)},
		}
		if err := controllerutil.SetControllerReference(ms, sec, r.Scheme()); err != nil {
			return "", err
		}
		if err := r.Create(ctx, sec, client.FieldOwner(FieldOwner)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// Not in the cache, which holds only Secrets with our
				// labels: someone else's Secret has the name.
				return "", fmt.Errorf("%s Secret %s exists without mediafleet's labels (%w): delete or rename it", g.what, sec.Name, errForeignSecret)
			}
			return "", fmt.Errorf("create %s Secret %s: %w", g.what, sec.Name, err)
		}
		sc.applied.record(false, "Secret", sec.Name)
		return v, nil
	case err != nil:
		return "", fmt.Errorf("get %s Secret: %w", g.what, err)
	}
	if !metav1.IsControlledBy(sec, ms) {
		return "", fmt.Errorf("%s Secret %s: %w", g.what, sec.Name, errForeignSecret)
	}
	if v := sec.Data[g.key]; len(v) >= g.minLen {
		return string(v), nil
	}
	// Emptied or cut short by someone: a new value, and the pods roll.
	v, err := g.generate()
	if err != nil {
		return "", err
	}
	if sec.Data == nil {
		sec.Data = map[string][]byte{}
	}
	sec.Data[g.key] = []byte(v)
	if err := r.Update(ctx, sec, client.FieldOwner(FieldOwner)); err != nil {
		return "", fmt.Errorf("renew %s Secret %s: %w", g.what, sec.Name, err)
	}
	sc.applied.record(true, "Secret", sec.Name)
	return v, nil
}

func newAdminToken() (string, error) {
	b := make([]byte, adminTokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:8])
}

// readAdminToken reads a MediaService's admin token from the cache ("" when
// the Secret does not exist yet).
func readAdminToken(ctx context.Context, c client.Reader, namespace, msName string) (string, error) {
	sec := &corev1.Secret{}
	err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: msName + desired.AdminTokenSecretSuffix}, sec)
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("get admin token Secret: %w", err)
	}
	if sec.Labels[desired.LabelManagedBy] != desired.ManagedByValue {
		return "", fmt.Errorf("admin token Secret %s: %w", sec.Name, errForeignSecret)
	}
	return string(sec.Data[desired.AdminTokenKey]), nil
}
