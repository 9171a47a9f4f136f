// A static Go HTTP client (built with CGO_ENABLED=0: Go's own resolver and raw syscalls, no
// libc), for the supervisor tests. usage: client URL [timeout-seconds]
// Prints the body, or "ERR <error>" and exits 1.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	timeout := 10.0
	if len(os.Args) > 2 {
		timeout, _ = strconv.ParseFloat(os.Args[2], 64)
	}
	c := &http.Client{Timeout: time.Duration(timeout * float64(time.Second))}
	start := time.Now()
	r, err := c.Get(os.Args[1])
	if err != nil {
		fmt.Printf("ERR %v (%.2fs)\n", err, time.Since(start).Seconds())
		os.Exit(1)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	fmt.Println(strings.TrimSpace(string(b)))
}
