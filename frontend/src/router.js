import { createRouter, createWebHistory } from 'vue-router'
import { useAuthStore } from '@/stores/auth'
import AlertsView from '@/views/AlertsView.vue'
import DashboardView from '@/views/DashboardView.vue'
import FleetView from '@/views/FleetView.vue'
import HistoryView from '@/views/HistoryView.vue'
import LoginView from '@/views/LoginView.vue'

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
      { path: '/login', name: 'login', component: LoginView, meta: { public: true } },
      { path: '/:rest(.*)*', redirect: '/' },
    ],
  })
  router.beforeEach((to) => {
    const auth = useAuthStore()
    if (!to.meta.public && !auth.isAuthenticated) {
      return { path: '/login', query: { next: to.fullPath } }
    }
    return true
  })
  return router
}
