package erasure

// LaneOf is the confirmation lane of a request id, so that a test can put
// two erasures' confirmations into one batch.
var LaneOf = lane

// Queued is how many confirmations wait in a lane's next batch.
func (c *Canceller) Queued() int {
	g := c.confirmations
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, grp := range g.running {
		if grp.next != nil {
			n += len(grp.next.items)
		}
	}
	return n
}
