// The in-transit certificate as a JVM (Hadoop's, Spark's) uses it: a TLS
// server with the key store made from privateKey.pem and
// certificateChain.pem, a client trusting only trustedCertificates.pem,
// both sides authenticated (client certificates required), and the host
// name checked the strict way (endpoint identification "HTTPS", RFC 2818
// wildcards). For each host name given, prints "NAME ok" or "NAME refused:
// WHY". Run by emr/tests/test_tls.py:
//   java TlsHandshake.java KEYSTORE.p12 TRUSTSTORE.p12 PASSWORD NAME...
import java.io.FileInputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.security.KeyStore;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

public class TlsHandshake {
    static KeyStore load(String path, char[] password) throws Exception {
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (FileInputStream in = new FileInputStream(path)) {
            ks.load(in, password);
        }
        return ks;
    }

    public static void main(String[] args) throws Exception {
        char[] password = args[2].toCharArray();
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(load(args[0], password), password);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(load(args[1], password));
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);

        SSLServerSocket server = (SSLServerSocket) ctx.getServerSocketFactory()
            .createServerSocket(0, 50, InetAddress.getLoopbackAddress());
        server.setNeedClientAuth(true);
        Thread accept = new Thread(() -> {
            while (true) {
                try (SSLSocket s = (SSLSocket) server.accept()) {
                    s.startHandshake();
                    s.getOutputStream().write(1);
                } catch (Exception e) {
                    if (server.isClosed()) return;
                }
            }
        });
        accept.setDaemon(true);
        accept.start();

        for (int i = 3; i < args.length; i++) {
            String name = args[i];
            try (Socket plain = new Socket(InetAddress.getLoopbackAddress(), server.getLocalPort());
                 SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(plain, name, server.getLocalPort(), true)) {
                SSLParameters p = s.getSSLParameters();
                p.setEndpointIdentificationAlgorithm("HTTPS");
                s.setSSLParameters(p);
                s.startHandshake();
                if (s.getInputStream().read() != 1) throw new IllegalStateException("no byte from the server");
                System.out.println(name + " ok");
            } catch (Exception e) {
                System.out.println(name + " refused: " + e);
            }
        }
        server.close();
    }
}
