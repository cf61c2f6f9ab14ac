package api_test

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// proxy is a TCP relay between this test's AMQP connection and RabbitMQ, so
// a test can take "the broker" away from its own connection only: down
// refuses connections; freeze swallows every byte (the broker never sees a
// publish, the client never sees a confirm) and counts the publishes the
// client sent meanwhile.
type proxy struct {
	t      testing.TB
	target string
	addr   string

	// frozenPublishes counts basic.publish frames swallowed since freeze.
	frozenPublishes atomic.Int64

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	frozen bool
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	p := &proxy{t: t, target: target, conns: map[net.Conn]struct{}{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(func() {
		p.down()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = struct{}{}, struct{}{}
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(up, c, &frameCounter{})
			go p.pipe(c, up, nil)
		}
	}()
}

// pipe relays src to dst. While frozen it drops what it reads; a frozen
// connection never carries traffic again (thaw and down close it), so the
// gap in its stream is never seen.
func (p *proxy) pipe(dst, src net.Conn, publishes *frameCounter) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			var seen int64
			if publishes != nil {
				seen = publishes.feed(buf[:n])
			}
			p.mu.Lock()
			frozen := p.frozen
			p.mu.Unlock()
			if frozen {
				p.frozenPublishes.Add(seen)
			} else if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			_ = src.Close()
			_ = dst.Close()
			return
		}
	}
}

// closeConns must be called with p.mu held.
func (p *proxy) closeConns() {
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// down closes the listener and every relayed connection: the broker is gone.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.closeConns()
	p.frozen = false
}

// up listens again on the same address.
func (p *proxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	require.NoError(p.t, err, "re-listening on %s", p.addr)
	p.serve(ln)
}

// freeze stops relaying on every connection.
func (p *proxy) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.frozenPublishes.Store(0)
	p.mu.Unlock()
}

// thaw drops every (frozen) connection and relays new ones again.
func (p *proxy) thaw() {
	p.mu.Lock()
	p.closeConns()
	p.frozen = false
	p.mu.Unlock()
}

// frameCounter follows the client side of an AMQP 0-9-1 stream and counts
// basic.publish method frames.
type frameCounter struct {
	buf    []byte
	header bool
}

func (f *frameCounter) feed(b []byte) int64 {
	f.buf = append(f.buf, b...)
	if !f.header {
		if len(f.buf) < 8 {
			return 0
		}
		f.buf, f.header = f.buf[8:], true // "AMQP" 0 0 9 1
	}
	var n int64
	for len(f.buf) >= 7 {
		size := int(binary.BigEndian.Uint32(f.buf[3:7]))
		if len(f.buf) < 7+size+1 {
			break
		}
		payload := f.buf[7 : 7+size]
		// Frame type 1 is a method; class 60 method 40 is basic.publish.
		if f.buf[0] == 1 && size >= 4 && binary.BigEndian.Uint16(payload[0:2]) == 60 && binary.BigEndian.Uint16(payload[2:4]) == 40 {
			n++
		}
		f.buf = f.buf[7+size+1:]
	}
	return n
}
