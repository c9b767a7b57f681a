// Command kstatus prints kstatus' verdict on Kubernetes objects: what Flux's and kpt's health checks compute.
//
// It reads one JSON object, or a List of them (what `kubectl get -o json` prints), from stdin, and prints one
// JSON line per object: {"namespace", "name", "status", "message"}, where status is kstatus' Current,
// InProgress, Failed, Terminating, NotFound or Unknown, computed by status.Compute of
// sigs.k8s.io/cli-utils/pkg/kstatus/status. The tests of proxmox-operator run it on objects read back from a
// real API server (tests/integration/test_kstatus.py); hack/tools.sh builds it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		return fmt.Errorf("stdin is not a Kubernetes object or List: %w", err)
	}
	var objects []*unstructured.Unstructured
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			return fmt.Errorf("reading the List: %w", err)
		}
		for i := range list.Items {
			objects = append(objects, &list.Items[i])
		}
	} else {
		objects = append(objects, obj)
	}
	enc := json.NewEncoder(out)
	for _, o := range objects {
		res, err := status.Compute(o)
		if err != nil {
			return fmt.Errorf("computing the status of %s/%s: %w", o.GetNamespace(), o.GetName(), err)
		}
		v := verdict{Namespace: o.GetNamespace(), Name: o.GetName(), Status: res.Status.String(), Message: res.Message}
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}
