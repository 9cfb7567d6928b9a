# dalli against a memcachier node, configured as MemCachier's documentation
# configures it, from MEMCACHIER_SERVERS / MEMCACHIER_USERNAME /
# MEMCACHIER_PASSWORD.  Prints one JSON object of what it observed; the
# pytest module (tests/integration/test_foreign_clients.py) checks it.
#
# MEMCACHIER_TEST_BIG: the size of the largest value that fits (key + value
# is at most the plan's item size).  MEMCACHIER_TLS_CA: when set, connect
# with dalli's own TLS (ssl_context) trusting this certificate.
require 'dalli'
require 'json'
require 'logger'
require 'openssl'

Dalli.logger = Logger.new($stderr)
Dalli.logger.level = Logger::ERROR

def client(password)
  options = {
    username: ENV['MEMCACHIER_USERNAME'],
    password: password,
    failover: true,
    socket_timeout: 1.5,
    socket_failure_delay: 0.2,
    down_retry_delay: 60,
    # values go to the server as they are: no zlib (and raw: below, no Marshal)
    compress: false
  }
  if ENV['MEMCACHIER_TLS_CA']
    context = OpenSSL::SSL::SSLContext.new
    context.set_params(ca_file: ENV['MEMCACHIER_TLS_CA'],
                       verify_mode: OpenSSL::SSL::VERIFY_PEER)
    options[:ssl_context] = context
  end
  Dalli::Client.new(ENV.fetch('MEMCACHIER_SERVERS').split(','), options)
end

def outcome
  result = yield
  { 'refused' => !result, 'error' => nil }
rescue Dalli::DalliError => e
  { 'refused' => true, 'error' => "#{e.class}: #{e.message}" }
end

raw = { raw: true }
mc = client(ENV.fetch('MEMCACHIER_PASSWORD'))
out = { 'client' => "dalli #{Dalli::VERSION}" }
out['seed'] = mc.get('seed', raw)
out['set'] = !!mc.set('k1', 'v1', 0, raw)
mc.set('k2', 'v2', 0, raw)
out['get'] = mc.get('k1', raw)
out['multi'] = begin
  mc.get_multi('k1', 'k2', 'missing')
rescue NoMethodError => e
  # dalli 3.0.6's get_multi over ssl_context calls a method its TLS socket
  # lacks (SSLSocket#server); report it rather than stop
  "#{e.class}: #{e.message.lines.first.strip[0, 200]}"
end
out['delete'] = mc.delete('k2')
out['afterDelete'] = mc.get('k2', raw)
mc.set('counter', '10', 0, raw)
out['incr'] = mc.incr('counter', 5)
out['decr'] = mc.decr('counter', 3)
mc.set('casKey', 'original', 0, raw)
_, cas = mc.get_cas('casKey')
fresh = mc.set_cas('casKey', 'swapped', cas, 0, raw)
stale = mc.set_cas('casKey', 'stale', cas, 0, raw)
out['cas'] = { 'fresh' => !!fresh, 'stale' => !!stale, 'value' => mc.get('casKey', raw) }

size = Integer(ENV.fetch('MEMCACHIER_TEST_BIG'))
big = ('0123456789abcdef' * (size / 16 + 1))[0, size]
stored = mc.set('big', big, 0, raw)
out['big'] = { 'size' => size, 'stored' => !!stored, 'same' => mc.get('big', raw) == big }
out['tooBig'] = outcome { mc.set('big2', big, 0, raw) }
out['afterTooBig'] = mc.get('k1', raw)
mc.set('written', 'ruby', 0, raw)

bad = client(ENV.fetch('MEMCACHIER_PASSWORD') + 'x')
out['wrongPassword'] = outcome { bad.set('k3', 'v3', 0, raw) }
out['wrongPasswordWrote'] = mc.get('k3', raw)
puts JSON.generate(out)
