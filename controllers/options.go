package controllers

// Options are the operator-wide settings the builders need. They come from
// manager flags; builders never read the environment.
type Options struct {
	// MediaserverImage is used when a MediaService leaves spec.image empty.
	MediaserverImage string
}
