package desired

// Options are the operator-wide settings the builders need; the reconciler
// derives them from its own options. Builders never read the environment.
type Options struct {
	// MediaserverImage is used when a MediaService leaves spec.image empty.
	MediaserverImage string
	// OperatorNamespace is where the operator runs: its pods may reach the
	// media pods' admin port through the generated NetworkPolicy.
	OperatorNamespace string
}
