// Command etcd is the etcd server at the version k8s.io/kubernetes itself pins
// (go.etcd.io/etcd/server/v3), built inside this wrapper module so that its
// dependency versions are the ones Kubernetes was tested with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
