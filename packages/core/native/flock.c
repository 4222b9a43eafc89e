/* flock(2) for Node and Bun: the IPAM store's inter-process lock, released by the kernel when
 * the holder dies. Node has no flock API; this is the whole addon. */
#include <errno.h>
#include <node_api.h>
#include <sys/file.h>

static napi_value try_lock(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "tryLock(fd: number)");
    return NULL;
  }
  int rc;
  do {
    rc = flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  napi_value result;
  napi_create_int32(env, rc == 0 ? 0 : errno, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "tryLock", NAPI_AUTO_LENGTH, try_lock, NULL, &fn);
  napi_set_named_property(env, exports, "tryLock", fn);
  return exports;
}
