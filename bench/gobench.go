// gobench: N sequential TCP dials to HOST:PORT (each closed at once), like connbench libc,
// for a static Go binary (CGO_ENABLED=0). Prints "connect_us n=N p50=... p99=...".
package main

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"time"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	addr := os.Args[2]
	v := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		t := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Println("fail", err)
			os.Exit(1)
		}
		v = append(v, float64(time.Since(t).Microseconds()))
		c.Close()
	}
	sort.Float64s(v)
	fmt.Printf("connect_us n=%d p50=%.1f p99=%.1f\n", n, v[n/2], v[n*99/100])
}
