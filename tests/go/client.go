// A static Go HTTP client (built with CGO_ENABLED=0: Go's own resolver and raw syscalls, no
// libc), for the supervisor tests. usage: client URL [timeout-seconds]
// Prints the body, or "ERR <error>" and exits 1.
//   client udp HOST:PORT MESSAGE: net.Dial("udp"), one datagram, its echo printed (5 s).
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) > 3 && os.Args[1] == "udp" {
		c, err := net.Dial("udp", os.Args[2])
		if err != nil {
			fmt.Printf("ERR %v\n", err)
			os.Exit(1)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte(os.Args[3])); err != nil {
			fmt.Printf("ERR %v\n", err)
			os.Exit(1)
		}
		b := make([]byte, 2048)
		n, err := c.Read(b)
		if err != nil {
			fmt.Printf("ERR %v\n", err)
			os.Exit(1)
		}
		fmt.Println(string(b[:n]))
		return
	}
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
