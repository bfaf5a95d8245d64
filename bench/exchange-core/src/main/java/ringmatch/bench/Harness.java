package ringmatch.bench;

import exchange.core2.collections.objpool.ObjectsPool;
import exchange.core2.core.common.CoreSymbolSpecification;
import exchange.core2.core.common.OrderAction;
import exchange.core2.core.common.OrderType;
import exchange.core2.core.common.SymbolType;
import exchange.core2.core.common.cmd.CommandResultCode;
import exchange.core2.core.common.cmd.OrderCommand;
import exchange.core2.core.common.config.LoggingConfiguration;
import exchange.core2.core.orderbook.IOrderBook;
import exchange.core2.core.orderbook.OrderBookDirectImpl;
import exchange.core2.core.orderbook.OrderBookEventsHelper;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Times exchange-core's OrderBookDirectImpl, single-threaded, on a ringmatch stream file
 * (docs/stream-format.md): the warm-up builds the book, the commands are timed. The JVM is
 * warmed up first with untimed passes over the whole stream; each timed pass starts from a
 * fresh book, like ringmatch's. Prints one line per timed pass and the median.
 *
 * Usage: java -jar harness.jar STREAM_FILE [WARMUP_PASSES] [TIMED_PASSES]
 */
public final class Harness {
    private static final int RECORD_BYTES = 64;
    private static final int HEADER_BYTES = 32;
    private static final long MAX_PRICE = 200_000;

    public static void main(String[] args) throws IOException {
        if (args.length < 1) {
            System.err.println("usage: Harness STREAM_FILE [WARMUP_PASSES] [TIMED_PASSES]");
            System.exit(2);
        }
        int warmupPasses = args.length > 1 ? Integer.parseInt(args[1]) : 5;
        int timedPasses = args.length > 2 ? Integer.parseInt(args[2]) : 5;
        Stream stream = read(Path.of(args[0]));
        long[] nanos = new long[timedPasses];
        long checksum = 0;
        for (int pass = 0; pass < warmupPasses + timedPasses; pass++) {
            IOrderBook book = newBook();
            for (OrderCommand command : stream.warmup) {
                IOrderBook.processCommand(book, command.copy());
            }
            // processCommand writes its results and events into the command: each pass runs
            // fresh copies, made before the clock starts.
            OrderCommand[] passCommands = new OrderCommand[stream.commands.size()];
            for (int index = 0; index < passCommands.length; index++) {
                passCommands[index] = stream.commands.get(index).copy();
            }
            long started = System.nanoTime();
            long accepted = 0;
            for (OrderCommand command : passCommands) {
                if (IOrderBook.processCommand(book, command) == CommandResultCode.SUCCESS) {
                    accepted++;
                }
            }
            long took = System.nanoTime() - started;
            checksum += accepted + book.getOrdersNum(OrderAction.ASK) + book.getOrdersNum(OrderAction.BID);
            if (pass >= warmupPasses) {
                nanos[pass - warmupPasses] = took;
                System.out.printf("exchange-core pass %d: %.0f commands/s (%d commands, %d succeeded, %d resting)%n",
                        pass - warmupPasses + 1,
                        stream.commands.size() * 1e9 / took,
                        stream.commands.size(),
                        accepted,
                        book.getOrdersNum(OrderAction.ASK) + book.getOrdersNum(OrderAction.BID));
            }
        }
        long[] sorted = nanos.clone();
        Arrays.sort(sorted);
        long median = sorted[sorted.length / 2];
        System.out.printf("exchange-core: median %.0f commands/s over %d passes (checksum %d)%n",
                stream.commands.size() * 1e9 / median, timedPasses, checksum);
    }

    private static IOrderBook newBook() {
        CoreSymbolSpecification spec = CoreSymbolSpecification.builder()
                .symbolId(1)
                .type(SymbolType.CURRENCY_EXCHANGE_PAIR)
                .baseCurrency(1)
                .quoteCurrency(2)
                .baseScaleK(1)
                .quoteScaleK(1)
                .takerFee(0)
                .makerFee(0)
                .build();
        return new OrderBookDirectImpl(
                spec,
                ObjectsPool.createDefaultTestPool(),
                OrderBookEventsHelper.NON_POOLED_EVENTS_HELPER,
                LoggingConfiguration.DEFAULT);
    }

    private record Stream(List<OrderCommand> warmup, List<OrderCommand> commands) {
    }

    private static Stream read(Path path) throws IOException {
        ByteBuffer bytes = ByteBuffer.wrap(Files.readAllBytes(path)).order(ByteOrder.LITTLE_ENDIAN);
        byte[] magic = new byte[8];
        bytes.get(magic);
        if (!new String(magic, java.nio.charset.StandardCharsets.US_ASCII).equals("RMSTREAM")) {
            throw new IOException(path + ": not a ringmatch stream file");
        }
        int version = bytes.getInt();
        if (version != 1) {
            throw new IOException(path + ": stream file version " + version + " (this reads 1)");
        }
        bytes.getInt();
        long warmupCount = bytes.getLong();
        long commandsCount = bytes.getLong();
        List<OrderCommand> warmup = new ArrayList<>();
        List<OrderCommand> commands = new ArrayList<>();
        for (long index = 0; index < warmupCount + commandsCount; index++) {
            int at = HEADER_BYTES + (int) index * RECORD_BYTES;
            OrderCommand command = toCommand(bytes, at);
            (index < warmupCount ? warmup : commands).add(command);
        }
        return new Stream(warmup, commands);
    }

    /** One 64-byte command record (docs/wire-format.md) as an exchange-core command. */
    private static OrderCommand toCommand(ByteBuffer bytes, int at) throws IOException {
        int type = bytes.get(at + 1);
        int side = bytes.get(at + 2);
        int tif = bytes.get(at + 4);
        int flags = bytes.get(at + 6);
        long account = Integer.toUnsignedLong(bytes.getInt(at + 8));
        long orderId = bytes.getLong(at + 16);
        long price = bytes.getLong(at + 32);
        long qty = bytes.getLong(at + 40);
        switch (type) {
            case 1: {
                OrderAction action = side == 1 ? OrderAction.BID : OrderAction.ASK;
                OrderType orderType = tif == 2 ? OrderType.IOC : OrderType.GTC;
                // Bids reserve the highest price a move may take them to.
                long reserve = action == OrderAction.BID ? MAX_PRICE : 0;
                return OrderCommand.newOrder(orderType, orderId, account, price, reserve, qty, action);
            }
            case 2:
                return OrderCommand.cancel(orderId, account);
            case 3:
                if ((flags & 0b010) != 0 && (flags & 0b100) == 0) {
                    return OrderCommand.update(orderId, account, price);
                }
                throw new IOException("a replace of quantity at offset " + at + ": the harness maps price moves only");
            default:
                throw new IOException("command type " + type + " at offset " + at + " has no exchange-core counterpart here");
        }
    }
}
