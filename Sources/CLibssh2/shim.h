#include <string.h>
#include <sys/types.h>
#include <libssh2.h>

// libssh2 spells several entry points as function-like macros, which Swift
// cannot import. These inline functions give them callable names.

static inline LIBSSH2_SESSION *airlock_ssh_session_init(void) {
    return libssh2_session_init_ex(NULL, NULL, NULL, NULL);
}

static inline LIBSSH2_CHANNEL *airlock_ssh_channel_open_session(LIBSSH2_SESSION *session) {
    return libssh2_channel_open_ex(session, "session", sizeof("session") - 1,
                                   LIBSSH2_CHANNEL_WINDOW_DEFAULT, LIBSSH2_CHANNEL_PACKET_DEFAULT,
                                   NULL, 0);
}

static inline LIBSSH2_CHANNEL *airlock_ssh_channel_direct_tcpip(LIBSSH2_SESSION *session, const char *host,
                                                                int port) {
    return libssh2_channel_direct_tcpip_ex(session, host, port, "127.0.0.1", 22);
}

static inline int airlock_ssh_channel_exec(LIBSSH2_CHANNEL *channel, const char *command) {
    return libssh2_channel_process_startup(channel, "exec", sizeof("exec") - 1, command,
                                           (unsigned int)strlen(command));
}

static inline ssize_t airlock_ssh_channel_read(LIBSSH2_CHANNEL *channel, int stream, char *buffer, size_t size) {
    return libssh2_channel_read_ex(channel, stream, buffer, size);
}

static inline ssize_t airlock_ssh_channel_write(LIBSSH2_CHANNEL *channel, int stream, const char *buffer,
                                                size_t size) {
    return libssh2_channel_write_ex(channel, stream, buffer, size);
}

static inline int airlock_ssh_channel_close_free(LIBSSH2_CHANNEL *channel) {
    return libssh2_channel_free(channel);
}

static inline int airlock_ssh_userauth_publickey_frommemory(LIBSSH2_SESSION *session, const char *user,
                                                            const char *privateKey, size_t privateKeyLength) {
    return libssh2_userauth_publickey_frommemory(session, user, strlen(user), NULL, 0, privateKey,
                                                 privateKeyLength, NULL);
}

static inline LIBSSH2_LISTENER *airlock_ssh_forward_listen(LIBSSH2_SESSION *session, const char *host, int port,
                                                           int *boundPort) {
    return libssh2_channel_forward_listen_ex(session, host, port, boundPort, 16);
}
