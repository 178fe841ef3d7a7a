// Command flux-health prints what Flux's kustomize-controller computes for one object with the health check
// expressions of a Kustomization's spec.healthCheckExprs (github.com/fluxcd/pkg/runtime/cel, the evaluator Flux
// itself runs, RFC 0009). Its one argument is a JSON object {"current": ..., "failed": ..., "inProgress": ...};
// it reads the object as JSON on stdin and writes {"status": "InProgress|Failed|Current", "message": ""} on stdout,
// or, when an expression cannot be evaluated (a field it names is missing), {"status": "Unknown", "message": the
// error}: what Flux's status poller makes of that error (it keeps waiting, as on InProgress).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/pkg/apis/kustomize"
	"github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, `usage: flux-health '{"current": "...", "failed": "...", "inProgress": "..."}' < object.json`)
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "flux-health:", err)
		os.Exit(1)
	}
}

func run(expressions string, in io.Reader, out io.Writer) error {
	var exprs kustomize.HealthCheckExpressions
	if err := json.Unmarshal([]byte(expressions), &exprs); err != nil {
		return fmt.Errorf("decoding the expressions: %w", err)
	}
	evaluator, err := cel.NewStatusEvaluator(&exprs)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	var object unstructured.Unstructured // its own decoder keeps integers as int64, as Flux's client does
	if err := object.UnmarshalJSON(body); err != nil {
		return fmt.Errorf("decoding the object: %w", err)
	}
	result, err := evaluator.Evaluate(context.Background(), &object)
	if err != nil { // as cli-utils' generic status reader turns a status function's error into a status
		return json.NewEncoder(out).Encode(verdict{Status: string(status.UnknownStatus), Message: err.Error()})
	}
	return json.NewEncoder(out).Encode(verdict{Status: string(result.Status), Message: result.Message})
}
