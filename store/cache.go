package store

import (
	"errors"
	"os"
	"sync"
	"time"
)

// adminCacheTTL bounds how long the server keeps the answer of an
// administrative read that every message makes (is the credential paused,
// is the sender's domain verified, its DKIM keys; the credential of a login). Every administrative
// write, in this process or another (the admin commands), also grows the
// stamp file, and an answer is used only while the stamp is as it was when
// the answer was read: changes are seen at once, and the TTL only covers a
// stamp that could not be written.
const adminCacheTTL = time.Second

// adminStampMax is the size at which the stamp file starts again from empty.
const adminStampMax = 1 << 20

// adminCacheMax bounds the entries: authenticated clients choose the names
// looked up (MAIL FROM domains), so the cache must not grow with them.
const adminCacheMax = 4096

// adminCache holds recent answers of the hot administrative reads. At full
// load each message made five of them (about 40 µs each through
// database/sql and SQLite), for data that changes a few times a day.
type adminCache struct {
	stamp string // the stamp file's path; "" for none

	mu  sync.Mutex
	m   map[string]adminEntry
	gen uint64 // bumped by clear: a read that began before must not store its answer
}

type adminEntry struct {
	v     any
	err   error // nil or wrapping ErrNotFound; other errors are not kept
	at    time.Time
	stamp stampState
}

// stampState is what stat says of the stamp file: it changes with every
// write to it (the size grows; the time moves too).
type stampState struct {
	size  int64
	mtime int64
}

func (c *adminCache) readStamp() stampState {
	if c.stamp == "" {
		return stampState{}
	}
	fi, err := os.Stat(c.stamp)
	if err != nil {
		return stampState{size: -1}
	}
	return stampState{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}

// changed is called by the admin writes after they commit: it forgets every
// answer here and grows the stamp file, which tells the other processes'
// caches (a running server, when an admin command made the write).
func (c *adminCache) changed() {
	c.clear()
	if c.stamp == "" {
		return
	}
	f, err := os.OpenFile(c.stamp, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return // a running server sees the change within adminCacheTTL
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() >= adminStampMax {
		f.Truncate(0)
		return
	}
	f.Write([]byte{'\n'})
}

// clear forgets every answer.
func (c *adminCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
	c.gen++
}

// cachedRead returns the answer for key, from c if it is fresh, else from
// load (whose answer is kept if it is a value or ErrNotFound).
func cachedRead[T any](c *adminCache, key string, load func() (T, error)) (T, error) {
	now := time.Now()
	stamp := c.readStamp()
	c.mu.Lock()
	e, ok := c.m[key]
	gen := c.gen
	c.mu.Unlock()
	if ok && now.Sub(e.at) < adminCacheTTL && e.stamp == stamp {
		v, _ := e.v.(T)
		return v, e.err
	}
	v, err := load()
	if err != nil && !errors.Is(err, ErrNotFound) {
		return v, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == gen {
		if c.m == nil || len(c.m) >= adminCacheMax {
			c.m = make(map[string]adminEntry)
		}
		c.m[key] = adminEntry{v: v, err: err, at: now, stamp: stamp}
	}
	return v, err
}
