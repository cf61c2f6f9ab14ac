package report

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Encrypted file format (version 2), a STREAM-style chunked AEAD:
//
//	header:  magic "GDPRENC2" | chunk size (uint32 BE) | key id (8 bytes) |
//	         salt (32 random bytes)
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
//
// The key id names the master key (see keyID) so that, after a key rotation,
// a file opens with the key it was sealed with among those configured.
// Version 1 files ("GDPRENC1", the same header without the key id) predate
// rotation: they were sealed with the single key of their day, so each
// configured key is tried on their first chunk.
const (
	cryptMagic      = "GDPRENC2"
	cryptMagicV1    = "GDPRENC1"
	cryptKeyIDLen   = 8
	cryptSaltLen    = 32
	cryptHeaderLen  = len(cryptMagic) + 4 + cryptKeyIDLen + cryptSaltLen
	cryptHeaderV1   = len(cryptMagicV1) + 4 + cryptSaltLen
	cryptTagLen     = 16
	cryptKeyLabel   = "gdpr report v1\x00"
	cryptKeyIDLabel = "gdpr report key id v1"
	defaultChunkLen = 64 << 10
	maxChunkLen     = 16 << 20
)

// ErrCorrupt means an encrypted report failed authentication or is
// malformed: tampered with, truncated, or encrypted with another key.
var ErrCorrupt = errors.New("report is corrupt or was tampered with")

// ErrUnknownKey means a report names a key id that is not among the
// configured keys (report.encryption_key and report.previous_encryption_keys):
// the key it was sealed with was removed, or the file is corrupt.
var ErrUnknownKey = fmt.Errorf("%w: sealed with a key that is not configured", ErrCorrupt)

// masterKey is a report encryption key and its id.
type masterKey struct {
	id  [cryptKeyIDLen]byte
	key []byte
}

// newMasterKey derives the key's id: a MAC of a fixed label, which names
// the key without revealing anything usable about it.
func newMasterKey(key []byte) masterKey {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(cryptKeyIDLabel))
	k := masterKey{key: key}
	copy(k.id[:], mac.Sum(nil))
	return k
}

// KeyID returns the id a report sealed with key carries in its header, as
// hex, for operators matching files to keys during a rotation.
func KeyID(key []byte) string {
	id := newMasterKey(key).id
	return hex.EncodeToString(id[:])
}

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

func newSealer(w io.Writer, master masterKey, id string, chunk int) (*sealer, error) {
	return newSealerBuffers(w, master, id, chunk, nil, nil)
}

// newSealerBuffers is newSealer with the chunk buffers given (reused from
// a pool); nil ones are allocated.
func newSealerBuffers(w io.Writer, master masterKey, id string, chunk int, buf, out []byte) (*sealer, error) {
	if chunk <= 0 || chunk > maxChunkLen {
		return nil, fmt.Errorf("chunk size %d out of range", chunk)
	}
	header := make([]byte, cryptHeaderLen)
	copy(header, cryptMagic)
	binary.BigEndian.PutUint32(header[len(cryptMagic):], uint32(chunk))
	copy(header[len(cryptMagic)+4:], master.id[:])
	salt := header[len(cryptMagic)+4+cryptKeyIDLen:]
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	aead, err := fileAEAD(master.key, salt, id)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(header); err != nil {
		return nil, err
	}
	if cap(buf) < chunk {
		buf = make([]byte, 0, chunk)
	}
	if cap(out) < chunk+cryptTagLen {
		out = make([]byte, 0, chunk+cryptTagLen)
	}
	return &sealer{
		w: w, aead: aead, header: header, chunk: chunk,
		nonce: make([]byte, aead.NonceSize()),
		buf:   buf[:0],
		out:   out[:0],
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
	r    io.Reader
	aead cipher.AEAD
	// candidates are tried on the first chunk of a version 1 file, which
	// does not name its key; aead is the one that opened it.
	candidates []cipher.AEAD
	header     []byte
	nonce      []byte
	in         []byte // ciphertext read ahead (one chunk plus one byte)
	plain      []byte
	pos        int
	chunk      int
	index      uint64
	done       bool
	err        error
}

// newOpener reads the header and picks the key among keys: the one whose
// id the header names, or for a version 1 file whichever opens its first chunk.
func newOpener(r io.Reader, keys []masterKey, id string) (*opener, error) {
	header := make([]byte, cryptHeaderLen)
	if _, err := io.ReadFull(r, header[:len(cryptMagic)]); err != nil {
		return nil, readErr(err)
	}
	headerLen := cryptHeaderLen
	switch string(header[:len(cryptMagic)]) {
	case cryptMagic:
	case cryptMagicV1:
		headerLen = cryptHeaderV1
	default:
		return nil, ErrCorrupt
	}
	header = header[:headerLen]
	if _, err := io.ReadFull(r, header[len(cryptMagic):]); err != nil {
		return nil, readErr(err)
	}
	chunk := int(binary.BigEndian.Uint32(header[len(cryptMagic):]))
	if chunk <= 0 || chunk > maxChunkLen {
		return nil, ErrCorrupt
	}
	o := &opener{r: r, header: header, chunk: chunk}
	if headerLen == cryptHeaderV1 {
		salt := header[len(cryptMagic)+4:]
		for _, k := range keys {
			aead, err := fileAEAD(k.key, salt, id)
			if err != nil {
				return nil, err
			}
			o.candidates = append(o.candidates, aead)
		}
		if len(o.candidates) == 0 {
			return nil, ErrUnknownKey
		}
	} else {
		keyID := header[len(cryptMagic)+4 : len(cryptMagic)+4+cryptKeyIDLen]
		salt := header[len(cryptMagic)+4+cryptKeyIDLen:]
		for _, k := range keys {
			if hmac.Equal(k.id[:], keyID) {
				aead, err := fileAEAD(k.key, salt, id)
				if err != nil {
					return nil, err
				}
				o.aead = aead
				break
			}
		}
		if o.aead == nil {
			return nil, fmt.Errorf("%w (key id %x)", ErrUnknownKey, keyID)
		}
	}
	o.nonce = make([]byte, 12) // AES-GCM's standard nonce size
	o.in = make([]byte, 0, chunk+cryptTagLen+1)
	o.plain = make([]byte, 0, chunk)
	return o, nil
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrCorrupt
	}
	return err
}

// plainSize returns the plaintext size of an encrypted file of cipherSize
// bytes with this file's header and chunk size, or -1 if no valid file has
// that size.
func (o *opener) plainSize(cipherSize int64) int64 {
	body := cipherSize - int64(len(o.header))
	full := int64(o.chunk + cryptTagLen)
	if body < cryptTagLen {
		return -1
	}
	n, rem := body/full, body%full
	switch {
	case rem == 0:
		return n * int64(o.chunk)
	case rem < cryptTagLen:
		return -1
	}
	return n*int64(o.chunk) + rem - cryptTagLen
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
	if o.aead == nil {
		// A version 1 file: the key that authenticates the first chunk is its key.
		for _, aead := range o.candidates {
			if plain, err := aead.Open(o.plain[:0], o.nonce, ct, o.header); err == nil {
				o.aead, o.candidates = aead, nil
				o.plain = plain
				break
			}
		}
		if o.aead == nil {
			return ErrCorrupt
		}
	} else {
		plain, err := o.aead.Open(o.plain[:0], o.nonce, ct, o.header)
		if err != nil {
			return ErrCorrupt
		}
		o.plain = plain
	}
	o.pos = 0
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
