# procsafe-bench peer: Ruby's raindrops, shared-memory counters for
# preforking servers (one cache line each, lock-free atomic adds), created
# before the fork: Raindrops.new(SERIES), the k-th increment of a worker to
# counter k % SERIES.
#
#   ruby ruby_raindrops.rb PROCESSES INCREMENTS SERIES
#
# The workers meet at a start barrier (a pipe the parent closes); the parent
# times from their release to the last worker's exit and prints
# "TOTAL SECONDS". Exits 77 when raindrops is not installed.
begin
  require 'raindrops'
rescue LoadError => e
  warn "raindrops not installed (Debian: ruby-raindrops): #{e.message}"
  exit 77
end

processes, n, series = ARGV.first(3).map { |a| Integer(a) }
counters = Raindrops.new(series)
ready_r, ready_w = IO.pipe
go_r, go_w = IO.pipe
pids = Array.new(processes) do
  fork do
    ready_r.close
    go_w.close
    ready_w.write('.')
    ready_w.close
    go_r.read # returns at EOF, when the parent closes its end: the start barrier
    if series == 1
      n.times { counters.incr(0) }
    else
      n.times { |k| counters.incr(k % series) }
    end
    exit!(0)
  end
end
ready_w.close
go_r.close
ready_r.read(processes) # every worker is at the barrier
start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
go_w.close
statuses = pids.map { |pid| Process.wait2(pid)[1] }
seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - start
abort 'a worker failed' unless statuses.all?(&:success?)
total = (0...series).sum { |i| counters[i] }
puts "#{total} #{seconds}"
