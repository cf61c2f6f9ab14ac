package relay

import (
	"sync"
	"time"
)

// waker broadcasts "something is due at" to every waiting worker. Each
// notification closes one generation and links the next, so a worker that
// ignores a far-future notification still sees every later one.
type waker struct {
	mu  sync.Mutex
	cur *generation
}

type generation struct {
	done chan struct{}
	at   time.Time   // set before done is closed
	next *generation // set before done is closed
}

func newWaker() *waker {
	return &waker{cur: &generation{done: make(chan struct{})}}
}

func (w *waker) current() *generation {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// notify wakes waiters whose target is after at; a zero at wakes them all.
func (w *waker) notify(at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.cur
	g.at = at
	g.next = &generation{done: make(chan struct{})}
	w.cur = g.next
	close(g.done)
}
