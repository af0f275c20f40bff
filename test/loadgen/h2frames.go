package loadgen

import (
	"encoding/binary"
	"net"
	"sync/atomic"
)

// H2Frames counts the HTTP/2 frames a proxy sent the load generator that
// can make Go's Transport retry a request: RST_STREAM by error code and
// GOAWAY. It reads the frame headers of the bytes the client receives (h2c
// with prior knowledge: the server's side is frames from its first byte).
type H2Frames struct {
	RSTRefused atomic.Int64 // RST_STREAM REFUSED_STREAM (0x7)
	RSTOther   atomic.Int64 // RST_STREAM with another code
	GoAway     atomic.Int64
}

// sniffConn counts the frames of everything read from its Conn.
type sniffConn struct {
	net.Conn
	f *H2Frames
	// Parser state: the current frame header as far as read, or how much
	// of the current frame's payload is left, and its first 8 bytes.
	hdr     [9]byte
	nhdr    int
	left    int
	typ     byte
	payload [8]byte
	npay    int
}

func (c *sniffConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.parse(b[:n])
	return n, err
}

func (c *sniffConn) parse(b []byte) {
	for len(b) > 0 {
		if c.nhdr < len(c.hdr) {
			k := copy(c.hdr[c.nhdr:], b)
			c.nhdr += k
			b = b[k:]
			if c.nhdr == len(c.hdr) {
				c.left = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
				c.typ = c.hdr[3]
				c.npay = 0
				c.endIfEmpty()
			}
			continue
		}
		k := min(len(b), c.left)
		if c.npay < len(c.payload) {
			c.npay += copy(c.payload[c.npay:], b[:k])
		}
		c.left -= k
		b = b[k:]
		c.endIfEmpty()
	}
}

// endIfEmpty counts the frame once its payload is read and starts the next.
func (c *sniffConn) endIfEmpty() {
	if c.left > 0 {
		return
	}
	switch c.typ {
	case 0x3: // RST_STREAM: error code (4 bytes)
		if c.npay >= 4 && binary.BigEndian.Uint32(c.payload[:4]) == 0x7 {
			c.f.RSTRefused.Add(1)
		} else {
			c.f.RSTOther.Add(1)
		}
	case 0x7: // GOAWAY: last stream id, error code, debug data
		c.f.GoAway.Add(1)
	}
	c.nhdr = 0
}
