// The pool of free buffers the parameter stores share: a request gets the tightest free buffer that
// holds it, else the largest free one (which its user grows), else a new one; given-back buffers are
// counted in `bytes` and reused without reallocation.

import DinoCore
import Testing

@Suite("buffer pool")
struct BufferPoolTests {
    @Test("best fit, else the largest, else new; reuse keeps the storage")
    func bestFit() {
        let pool = BufferPool<Float>()
        #expect(pool.bytes == 0)
        let small = pool.take(atLeast: 10), large = pool.take(atLeast: 1000), middle = pool.take(atLeast: 100)
        small.reserve(10)
        large.reserve(1000)
        middle.reserve(100)
        let middleBase = middle.base
        for buffer in [middle, large, small] { pool.give(buffer) }  // last in is the smallest: not LIFO
        #expect(pool.bytes == (10 + 1000 + 100) * 4)

        let fit = pool.take(atLeast: 50)
        #expect(fit === middle, "50 elements take the 100-element buffer, not the 1000-element one")
        #expect(fit.reserve(50) == middleBase, "a buffer large enough is not reallocated")
        let grown = pool.take(atLeast: 5000)
        #expect(grown === large, "nothing holds 5000: the largest free buffer is handed out to grow")
        let last = pool.take(atLeast: 1)
        #expect(last === small)
        #expect(pool.bytes == 0)
        let fresh = pool.take(atLeast: 1)
        #expect(fresh !== small && fresh !== middle && fresh !== large && fresh.capacity <= 1)
    }
}
