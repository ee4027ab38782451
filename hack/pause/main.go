// Command pause is the sandbox ("pause") image of the local cluster: it
// holds a pod's namespaces and waits for SIGTERM or SIGINT. No image can be
// pulled here, so the project ships its own.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
}
