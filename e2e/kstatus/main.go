// Command kstatus judges Kubernetes objects the way Flux (and kpt, cli-utils) does, with
// sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, so the e2e suite can check that our
// custom resources report readiness in the form GitOps tools understand.
//
// Input: JSON on stdin, either one object or a List (`kubectl get ... -o json`).
// Output: one line per object, tab-separated: STATUS KIND NAMESPACE/NAME MESSAGE,
// or with -o json a JSON array of {kind, namespace, name, status, message}.
// Exit code 0 on success, 1 when an object cannot be judged, 2 on bad input.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	output := flag.String("o", "text", "output format: text or json")
	flag.Parse()

	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: reading stdin:", err)
		os.Exit(2)
	}
	objects, err := decode(data)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}

	exit := 0
	results := make([]result, 0, len(objects))
	for _, obj := range objects {
		res, err := status.Compute(obj)
		r := result{Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName()}
		if err != nil {
			r.Status, r.Message = "Unknown", err.Error()
			exit = 1
		} else {
			r.Status, r.Message = res.Status.String(), res.Message
		}
		results = append(results, r)
	}

	switch *output {
	case "json":
		enc := json.NewEncoder(os.Stdout)
		if err := enc.Encode(results); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(2)
		}
	default:
		for _, r := range results {
			fmt.Printf("%s\t%s\t%s/%s\t%s\n", r.Status, r.Kind, r.Namespace, r.Name, r.Message)
		}
	}
	os.Exit(exit)
}

// decode accepts a single object or any *List kind with an items array.
func decode(data []byte) ([]*unstructured.Unstructured, error) {
	// utiljson decodes whole numbers as int64, as unstructured accessors require
	// (encoding/json would give float64 and kstatus could not read metadata.generation).
	var raw map[string]any
	if err := utiljson.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("input is not a JSON object: %w", err)
	}
	obj := &unstructured.Unstructured{Object: raw}
	if !obj.IsList() {
		if obj.GetKind() == "" {
			return nil, fmt.Errorf("input object has no kind")
		}
		return []*unstructured.Unstructured{obj}, nil
	}
	list, err := obj.ToList()
	if err != nil {
		return nil, fmt.Errorf("input list: %w", err)
	}
	out := make([]*unstructured.Unstructured, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out, nil
}
