import { createRouter, createWebHistory } from 'vue-router'
import { useAuthStore } from '@/stores/auth'
import AlertsView from '@/views/AlertsView.vue'
import DashboardView from '@/views/DashboardView.vue'
import FleetView from '@/views/FleetView.vue'
import HistoryView from '@/views/HistoryView.vue'
import LoginView from '@/views/LoginView.vue'
import TokensView from '@/views/TokensView.vue'
import UsersView from '@/views/UsersView.vue'

export function makeRouter() {
  const router = createRouter({
    history: createWebHistory(),
    routes: [
      // This instance's own host; /hosts/NAME is any host in the database.
      { path: '/', name: 'dashboard', component: DashboardView },
      { path: '/history', name: 'history', component: HistoryView },
      { path: '/hosts/:host', name: 'host', component: DashboardView },
      { path: '/hosts/:host/history', name: 'host-history', component: HistoryView },
      { path: '/alerts', name: 'alerts', component: AlertsView },
      { path: '/hosts/:host/alerts', name: 'host-alerts', component: AlertsView },
      { path: '/fleet', name: 'fleet', component: FleetView },
      { path: '/users', name: 'users', component: UsersView, meta: { admin: true } },
      { path: '/tokens', name: 'tokens', component: TokensView },
      { path: '/login', name: 'login', component: LoginView, meta: { public: true } },
      { path: '/:rest(.*)*', redirect: '/' },
    ],
  })
  router.beforeEach(async (to) => {
    const auth = useAuthStore()
    if (!to.meta.public && !auth.isAuthenticated) {
      return { path: '/login', query: { next: to.fullPath } }
    }
    // Admin pages: the server refuses a viewer anyway (403); the page is not offered.
    if (to.meta.admin) {
      if (auth.role === null) await auth.loadMe()
      if (!auth.isAdmin) return { path: '/' }
    }
    return true
  })
  return router
}
