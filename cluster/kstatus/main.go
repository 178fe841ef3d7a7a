// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status), the library behind Flux's
// health checks, Helm 4's --wait and the cli-utils appliers, computes for one Kubernetes object. It reads the
// object as JSON on stdin and writes {"status": "InProgress|Failed|Current|Terminating|...", "message": "..."} on
// stdout. The tests run it on HPScan bodies, so what is checked is the real library, not a re-implementation.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type computed struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	body, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	// Unstructured's own decoder keeps integers as int64, as the client-go informers that Flux and Helm use do;
	// with encoding/json they would be float64 and kstatus's observedGeneration check would fail on them.
	var object unstructured.Unstructured
	if err := object.UnmarshalJSON(body); err != nil {
		return fmt.Errorf("decoding the object: %w", err)
	}
	result, err := status.Compute(&object)
	if err != nil {
		return fmt.Errorf("computing the status: %w", err)
	}
	return json.NewEncoder(out).Encode(computed{Status: string(result.Status), Message: result.Message})
}
