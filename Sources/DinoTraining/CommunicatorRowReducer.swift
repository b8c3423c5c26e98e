// The objective's cross-rank sums and maxima (DinoModel's RowReducer) as all-reduces over the
// training step's communicator: the one place where the model's collectives meet the ranks.

import DinoCore
import DinoModel

/// A `RowReducer` over every rank of `communicator`.
public final class CommunicatorRowReducer: RowReducer {
    public let communicator: any Communicator

    public init(_ communicator: any Communicator) { self.communicator = communicator }

    public var ranks: Int { communicator.worldSize }
    public var rank: Int { communicator.rank }
    public func sum(_ values: UnsafeMutableBufferPointer<Double>) throws {
        try communicator.allReduce(values, op: .sum)
    }
    public func sum(_ value: Double) throws -> Double { try communicator.allReduce(value, op: .sum) }
    public func max(_ value: Double) throws -> Double { try communicator.allReduce(value, op: .max) }
}
