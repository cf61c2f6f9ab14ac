package report

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Encrypted file format (version 1), a STREAM-style chunked AEAD:
//
//	header:  magic "GDPRENC1" | chunk size (uint32 BE) | salt (32 random bytes)
//	chunks:  AES-256-GCM(plaintext chunk) with its 16-byte tag, each chunk
//	         chunkSize bytes of plaintext except the last (1..chunkSize bytes,
//	         or 0 only when the whole plaintext is empty)
//
// The key of each file is HKDF-SHA256(master key, salt, info = label | id), so
// nonces never repeat across files and a file renamed to another report's id
// fails to open. The nonce is the chunk index (uint64 BE) followed by a
// final-chunk flag: reordered, dropped, or appended chunks fail
// authentication, and so does a file truncated at a chunk boundary (its new
// last chunk was not sealed as final). The header is bound in as AAD.
const (
	cryptMagic      = "GDPRENC1"
	cryptSaltLen    = 32
	cryptHeaderLen  = len(cryptMagic) + 4 + cryptSaltLen
	cryptTagLen     = 16
	cryptKeyLabel   = "gdpr report v1\x00"
	defaultChunkLen = 64 << 10
	maxChunkLen     = 16 << 20
)

// ErrCorrupt means an encrypted report failed authentication or is
// malformed: tampered with, truncated, or encrypted with another key.
var ErrCorrupt = errors.New("report is corrupt or was tampered with")

func fileAEAD(master []byte, salt []byte, id string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, master, salt, cryptKeyLabel+id, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func chunkNonce(nonce []byte, index uint64, final bool) {
	clear(nonce)
	binary.BigEndian.PutUint64(nonce[3:11], index)
	if final {
		nonce[11] = 1
	}
}

// sealer encrypts everything written to it into w. Close seals the final
// chunk; without Close the output is not a valid file.
type sealer struct {
	w      io.Writer
	aead   cipher.AEAD
	header []byte
	nonce  []byte
	buf    []byte // plaintext of the pending chunk
	out    []byte
	chunk  int
	index  uint64
	closed bool
}

func newSealer(w io.Writer, master []byte, id string, chunk int) (*sealer, error) {
	if chunk <= 0 || chunk > maxChunkLen {
		return nil, fmt.Errorf("chunk size %d out of range", chunk)
	}
	header := make([]byte, cryptHeaderLen)
	copy(header, cryptMagic)
	binary.BigEndian.PutUint32(header[len(cryptMagic):], uint32(chunk))
	salt := header[len(cryptMagic)+4:]
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	aead, err := fileAEAD(master, salt, id)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(header); err != nil {
		return nil, err
	}
	return &sealer{
		w: w, aead: aead, header: header, chunk: chunk,
		nonce: make([]byte, aead.NonceSize()),
		buf:   make([]byte, 0, chunk),
		out:   make([]byte, 0, chunk+cryptTagLen),
	}, nil
}

func (s *sealer) Write(p []byte) (int, error) {
	if s.closed {
		return 0, errors.New("write after close")
	}
	n := 0
	for len(p) > 0 {
		// A full chunk is sealed only once more data arrives, so the last
		// chunk is always the one sealed as final by Close.
		if len(s.buf) == s.chunk {
			if err := s.seal(false); err != nil {
				return n, err
			}
		}
		k := copy(s.buf[len(s.buf):s.chunk], p)
		s.buf = s.buf[:len(s.buf)+k]
		p = p[k:]
		n += k
	}
	return n, nil
}

func (s *sealer) seal(final bool) error {
	chunkNonce(s.nonce, s.index, final)
	s.out = s.aead.Seal(s.out[:0], s.nonce, s.buf, s.header)
	s.index++
	s.buf = s.buf[:0]
	_, err := s.w.Write(s.out)
	return err
}

// Close seals the final chunk. It does not close the underlying writer.
func (s *sealer) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	return s.seal(true)
}

// opener decrypts a file written by sealer, failing with ErrCorrupt on any
// authentication failure or truncation.
type opener struct {
	r      io.Reader
	aead   cipher.AEAD
	header []byte
	nonce  []byte
	in     []byte // ciphertext read ahead (one chunk plus one byte)
	plain  []byte
	pos    int
	chunk  int
	index  uint64
	done   bool
	err    error
}

func newOpener(r io.Reader, master []byte, id string) (*opener, int, error) {
	header := make([]byte, cryptHeaderLen)
	if _, err := io.ReadFull(r, header); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, 0, ErrCorrupt
		}
		return nil, 0, err
	}
	if string(header[:len(cryptMagic)]) != cryptMagic {
		return nil, 0, ErrCorrupt
	}
	chunk := int(binary.BigEndian.Uint32(header[len(cryptMagic):]))
	if chunk <= 0 || chunk > maxChunkLen {
		return nil, 0, ErrCorrupt
	}
	aead, err := fileAEAD(master, header[len(cryptMagic)+4:], id)
	if err != nil {
		return nil, 0, err
	}
	return &opener{
		r: r, aead: aead, header: header, chunk: chunk,
		nonce: make([]byte, aead.NonceSize()),
		in:    make([]byte, 0, chunk+cryptTagLen+1),
		plain: make([]byte, 0, chunk),
	}, chunk, nil
}

// plainSize returns the plaintext size of an encrypted file of cipherSize
// bytes with the given chunk size, or -1 if no valid file has that size.
func plainSize(cipherSize int64, chunk int) int64 {
	body := cipherSize - int64(cryptHeaderLen)
	full := int64(chunk + cryptTagLen)
	if body < cryptTagLen {
		return -1
	}
	n, rem := body/full, body%full
	switch {
	case rem == 0:
		return n * int64(chunk)
	case rem < cryptTagLen:
		return -1
	}
	return n*int64(chunk) + rem - cryptTagLen
}

func (o *opener) Read(p []byte) (int, error) {
	for o.pos == len(o.plain) {
		if o.err != nil {
			return 0, o.err
		}
		if o.done {
			return 0, io.EOF
		}
		o.err = o.next()
	}
	n := copy(p, o.plain[o.pos:])
	o.pos += n
	return n, nil
}

// next decrypts the next chunk. It reads one byte past the chunk to learn
// whether this chunk must be the final one.
func (o *opener) next() error {
	want := o.chunk + cryptTagLen + 1
	have := len(o.in)
	o.in = o.in[:want]
	n, err := io.ReadFull(o.r, o.in[have:])
	o.in = o.in[:have+n]
	final := false
	switch {
	case err == nil:
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		final = true
	default:
		return err
	}
	ct := o.in
	if !final {
		ct = o.in[:want-1]
	}
	if len(ct) < cryptTagLen {
		return ErrCorrupt
	}
	chunkNonce(o.nonce, o.index, final)
	plain, err := o.aead.Open(o.plain[:0], o.nonce, ct, o.header)
	if err != nil {
		return ErrCorrupt
	}
	o.plain, o.pos = plain, 0
	o.index++
	if final {
		o.done = true
		o.in = o.in[:0]
		return nil
	}
	// Keep the read-ahead byte as the start of the next chunk.
	o.in[0] = o.in[want-1]
	o.in = o.in[:1]
	return nil
}
