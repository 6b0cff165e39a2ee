package gnutls

func (c *Conn) refsNow() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.refs
}

func (c *Conn) isFreed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.freed
}
